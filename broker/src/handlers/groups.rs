//! A topic's consumer groups: list them (any permission on the topic),
//! reset one (admin; on every replica of a replicated topic).

use herald_protocol::{GroupList, Message, ResetGroup, TopicName};

use super::Handler;
use crate::auth::Need;
use crate::session::{Close, Session};

pub(crate) struct ListGroups(pub(crate) TopicName);

impl Handler for ListGroups {
    fn needs(&self) -> Need<'_> {
        Need::See(&self.0.name)
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        match s.shared.registry.get(&self.0.name) {
            Ok(t) => s.later(id, async move {
                let groups = t.group_infos().await?;
                Ok(Message::GroupList(GroupList { groups }))
            }),
            Err(e) => s.reply(id, e.to_message()).await,
        }
    }
}

impl Handler for ResetGroup {
    fn needs(&self) -> Need<'_> {
        Need::Admin(&self.topic)
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        // A replicated topic's reset is replicated too: the group moves
        // on every replica (see `cluster::positions`).
        let cluster = s.shared.cluster.clone();
        match s.shared.registry.get(&self.topic) {
            Ok(t) => s.later(id, async move {
                let floor = t.reset_group(&self.group, self.to).await?;
                if let Some(c) = cluster.filter(|c| c.is_replicated(&self.topic)) {
                    c.reset_group(&self.topic, &self.group, floor).await?;
                }
                Ok(Message::Ok)
            }),
            Err(e) => s.reply(id, e.to_message()).await,
        }
    }
}
