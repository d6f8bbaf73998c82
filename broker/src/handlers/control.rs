//! Ping and Refresh: requests about the connection itself.

use herald_protocol::{Message, Refresh};

use super::Handler;
use crate::auth::{AuthError, Need};
use crate::session::{Close, Session};
use crate::BrokerError;

/// Ping: answered Pong.
pub(crate) struct Ping;

impl Handler for Ping {
    fn needs(&self) -> Need<'_> {
        Need::Nothing
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        s.reply(id, Message::Pong).await
    }
}

/// Refresh: a new token for the same client id. The connection then has
/// the new token's permissions and expiry; subscriptions the new
/// permissions no longer cover are ended with a SubscriptionError.
impl Handler for Refresh {
    fn needs(&self) -> Need<'_> {
        Need::Nothing
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        let auth = s.shared.auth.clone();
        if !auth.is_required() {
            // Nothing to refresh: the connection never expires.
            return s.reply(id, Message::Ok).await;
        }
        let checked = auth.authenticate(Some(&self.token)).and_then(|who| {
            match who.bind(Some(s.client_id.clone())) {
                Ok(_) => Ok(who),
                Err(AuthError::ClientId { .. }) => Err(AuthError::ClientIdChanged {
                    current: s.client_id.clone(),
                    new: who.name.clone(),
                }),
                Err(e) => Err(e),
            }
        });
        let who = match checked {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(client = %s.client_id, reason = %e, "token refresh refused");
                return s.reply(id, BrokerError::from(e).to_message()).await;
            }
        };
        s.access.set_grants(who.grants);
        s.expires_at = who.expires_at;
        s.warned = false;
        s.schedule_token();
        tracing::debug!(client = %s.client_id, "token refreshed");
        super::subscribe::end_unauthorized(s).await?;
        s.reply(id, Message::Ok).await
    }
}
