//! What a connection may do: the [`Grants`] of its token, the [`Need`] a
//! request declares, and [`Access`], which decides (and remembers the
//! decision) for one connection.
//!
//! The resources each action names:
//! - publish, subscribe, admin: a topic name (subscribe may also restrict
//!   the group: `"orders.> billing"`);
//! - join (Join, Members): a room name;
//! - emit (an Emit without a correlation id): a room name or a client id
//!   (a client id is also the name of that client's own room); an emit to
//!   every connected client needs `>`;
//! - request (an Emit with a correlation id, and Reply): a room name or a
//!   client id, the same way.
//!
//! Whatever the grants, the inbox rule holds: only its owner reads
//! `_inbox.<client id>`, and nobody publishes to an inbox directly (events
//! reach inboxes only through emits, whose sender header the broker sets).
//! Room logs (`_room.<room>`) likewise: written by emits only, read by the
//! room's members, which needs the permission to join the room.

use std::collections::HashMap;
use std::sync::Arc;

use herald_protocol::EmitTarget;
use serde::{Deserialize, Serialize};

use super::pattern::{PatternError, Patterns};
use crate::rooms::inbox::INBOX_PREFIX;
use crate::rooms::log::ROOM_PREFIX;
use crate::BrokerError;

/// Permissions as written in a token's claims or the tokens file: lists of
/// patterns (see [`super::pattern`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrantSpec {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    /// `topic-pattern` or `topic-pattern group-pattern`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subscribe: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub admin: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub join: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub emit: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request: Vec<String>,
    /// Speak for a cluster node (Raft calls between nodes): given to the
    /// nodes' own tokens only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cluster: bool,
}

/// One subscribe permission: topics, and optionally which groups.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SubscribeGrant {
    topics: Patterns,
    /// `None`: any group, and ephemeral subscriptions.
    groups: Option<Patterns>,
}

/// Checked permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    publish: Patterns,
    subscribe: Vec<SubscribeGrant>,
    admin: Patterns,
    join: Patterns,
    emit: Patterns,
    request: Patterns,
    cluster: bool,
}

impl Grants {
    /// Parses every pattern of `spec`.
    ///
    /// # Errors
    /// The first malformed pattern.
    pub fn parse(spec: &GrantSpec) -> Result<Grants, PatternError> {
        let mut subscribe = Vec::new();
        for s in &spec.subscribe {
            let mut parts = s.split_whitespace();
            let topics = Patterns::parse(&[parts.next().unwrap_or("")])?;
            let groups = parts.next().map(|g| Patterns::parse(&[g])).transpose()?;
            if parts.next().is_some() {
                return Err(PatternError::SubscribeShape(s.clone()));
            }
            subscribe.push(SubscribeGrant { topics, groups });
        }
        Ok(Grants {
            publish: Patterns::parse(&spec.publish)?,
            subscribe,
            admin: Patterns::parse(&spec.admin)?,
            join: Patterns::parse(&spec.join)?,
            emit: Patterns::parse(&spec.emit)?,
            request: Patterns::parse(&spec.request)?,
            cluster: spec.cluster,
        })
    }

    fn may_subscribe(&self, topic: &str, group: Option<&str>) -> bool {
        self.subscribe.iter().any(|g| {
            g.topics.allows(topic)
                && match (&g.groups, group) {
                    (None, _) => true,
                    (Some(p), Some(group)) => p.allows(group),
                    (Some(_), None) => false,
                }
        })
    }

    /// Whether any permission names `topic` (it may then see the topic's
    /// description and groups).
    fn may_see(&self, topic: &str) -> bool {
        self.publish.allows(topic)
            || self.admin.allows(topic)
            || self.subscribe.iter().any(|g| g.topics.allows(topic))
    }
}

/// What a request needs, declared by its handler (see
/// `crate::handlers`). Checked once, before the request does anything.
#[derive(Debug, Clone, Copy)]
pub enum Need<'a> {
    /// Nothing beyond a completed handshake (Ping, Ack, Flow, Unsubscribe,
    /// Leave, Refresh: they act only on the connection's own state).
    Nothing,
    Publish(&'a str),
    Subscribe {
        topic: &'a str,
        group: Option<&'a str>,
    },
    /// Create, delete, repair a topic; reset one of its groups.
    Admin(&'a str),
    /// Describe a topic or list its groups: any permission on the topic.
    See(&'a str),
    /// Join a room, or list its members.
    Join(&'a str),
    /// Emit; `request` when it carries a correlation id.
    Emit {
        target: &'a EmitTarget,
        request: bool,
    },
    /// Reply to a client's request.
    Reply(&'a str),
    /// Take part in the cluster's Raft groups (a peer node).
    Cluster,
}

/// The kinds of single-resource decisions [`Access`] remembers.
#[derive(Clone, Copy)]
enum Kind {
    Publish = 0,
    Subscribe = 1,
    Admin = 2,
    See = 3,
    Join = 4,
    Emit = 5,
    Request = 6,
}
const KINDS: usize = 7;

/// Decisions remembered per kind; past this many the kind's map starts
/// over, so a client naming endless topics costs bounded memory.
const CACHE_ENTRIES: usize = 256;

/// One connection's permissions and its cache of decisions. Owned by the
/// session; nothing else reads it.
#[derive(Debug)]
pub struct Access {
    client_id: String,
    /// `None`: authentication is off (or TLS client certificates are the
    /// only check): everything but the inbox rule is allowed.
    grants: Option<Arc<Grants>>,
    /// Remembered single-resource decisions, one map per [`Kind`].
    cache: [HashMap<Box<str>, bool>; KINDS],
}

impl Access {
    /// Access for `client_id` under `grants` (`None`: no restriction).
    pub fn new(client_id: String, grants: Option<Arc<Grants>>) -> Access {
        Access {
            client_id,
            grants,
            cache: Default::default(),
        }
    }

    /// Replaces the grants (a refreshed token); forgets every decision.
    pub fn set_grants(&mut self, grants: Option<Arc<Grants>>) {
        self.grants = grants;
        for m in &mut self.cache {
            m.clear();
        }
    }

    /// The connection's client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Decides `need`.
    ///
    /// # Errors
    /// [`BrokerError::Unauthorized`] naming the action and the resource.
    pub fn check(&mut self, need: Need<'_>) -> Result<(), BrokerError> {
        let ok = match need {
            Need::Nothing => true,
            Need::Publish(t) => {
                if t.starts_with(INBOX_PREFIX) {
                    return Err(self.refuse(
                        "publish to",
                        "inbox topic",
                        t,
                        " (inboxes are written by emits only)",
                    ));
                }
                if t.starts_with(ROOM_PREFIX) {
                    return Err(self.refuse(
                        "publish to",
                        "room log",
                        t,
                        " (room logs are written by emits only)",
                    ));
                }
                self.single(Kind::Publish, t, |g, t| g.publish.allows(t))
            }
            Need::Subscribe { topic, group } => {
                if let Some(owner) = topic.strip_prefix(INBOX_PREFIX) {
                    if owner != self.client_id {
                        return Err(self.refuse(
                            "subscribe to",
                            "topic",
                            topic,
                            " (another client's inbox)",
                        ));
                    }
                    true
                } else if let Some(room) = topic.strip_prefix(ROOM_PREFIX) {
                    // A room's log is read by its members (the handler
                    // checks membership): the permission is to join it.
                    return self.check(Need::Join(room));
                } else {
                    match (&self.grants, group) {
                        (None, _) => true,
                        // The group is part of the decision: not cached.
                        (Some(g), Some(group)) => g.may_subscribe(topic, Some(group)),
                        (Some(_), None) => {
                            self.single(Kind::Subscribe, topic, |g, t| g.may_subscribe(t, None))
                        }
                    }
                }
            }
            Need::Admin(t) => self.single(Kind::Admin, t, |g, t| g.admin.allows(t)),
            Need::See(t) => self.may_see(t),
            Need::Join(r) => self.single(Kind::Join, r, |g, r| g.join.allows(r)),
            Need::Emit { target, request } => return self.check_emit(target, request),
            Need::Reply(c) => self.single(Kind::Request, c, |g, c| g.request.allows(c)),
            Need::Cluster => self.grants.as_ref().is_none_or(|g| g.cluster),
        };
        if ok {
            return Ok(());
        }
        Err(match need {
            Need::Publish(t) => self.refuse("publish to", "topic", t, ""),
            Need::Subscribe {
                topic,
                group: Some(g),
            } => self.refuse(
                "subscribe to",
                "topic",
                topic,
                &format!(" with group {g:?}"),
            ),
            Need::Subscribe { topic, .. } => self.refuse("subscribe to", "topic", topic, ""),
            Need::Admin(t) => self.refuse("administer", "topic", t, ""),
            Need::See(t) => self.refuse("see", "topic", t, ""),
            Need::Join(r) => self.refuse("join", "room", r, ""),
            Need::Reply(c) => self.refuse("reply to", "client", c, ""),
            Need::Cluster => self.refuse(
                "speak for",
                "a cluster node",
                "",
                " (needs the cluster permission)",
            ),
            Need::Nothing | Need::Emit { .. } => self.refuse("do", "this", "", ""),
        })
    }

    /// Whether the connection may see `topic` (its description, its
    /// groups, its entry in a topic list).
    pub fn may_see(&mut self, topic: &str) -> bool {
        if let Some(owner) = topic.strip_prefix(INBOX_PREFIX) {
            if owner == self.client_id {
                return true;
            }
        }
        self.single(Kind::See, topic, |g, t| g.may_see(t))
    }

    fn check_emit(&mut self, target: &EmitTarget, request: bool) -> Result<(), BrokerError> {
        let (kind, action) = if request {
            (Kind::Request, "send a request to")
        } else {
            (Kind::Emit, "emit to")
        };
        let test = move |g: &Grants, r: &str| {
            if request {
                g.request.allows(r)
            } else {
                g.emit.allows(r)
            }
        };
        let one = |a: &mut Access, what: &str, r: &str| {
            if a.single(kind, r, test) {
                Ok(())
            } else {
                Err(a.refuse(action, what, r, ""))
            }
        };
        match target {
            EmitTarget::Room(r) | EmitTarget::RoomExceptSender(r) => one(self, "room", r),
            EmitTarget::Rooms { rooms, .. } => rooms.iter().try_for_each(|r| one(self, "room", r)),
            EmitTarget::Client(c) => one(self, "client", c),
            EmitTarget::All => {
                let all = match &self.grants {
                    None => true,
                    Some(g) if request => g.request.allows_everything(),
                    Some(g) => g.emit.allows_everything(),
                };
                if all {
                    Ok(())
                } else {
                    Err(self.refuse(action, "every client", "", " (needs the pattern \">\")"))
                }
            }
        }
    }

    /// A single-resource decision, from the cache when made before.
    fn single(&mut self, kind: Kind, resource: &str, test: impl Fn(&Grants, &str) -> bool) -> bool {
        let Some(g) = &self.grants else {
            return true;
        };
        let cache = &mut self.cache[kind as usize];
        if let Some(&ok) = cache.get(resource) {
            return ok;
        }
        let ok = test(g, resource);
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(resource.into(), ok);
        ok
    }

    fn refuse(&self, action: &str, what: &str, resource: &str, why: &str) -> BrokerError {
        let resource = if resource.is_empty() {
            String::new()
        } else {
            format!(" {resource:?}")
        };
        BrokerError::Unauthorized(format!(
            "client {:?} may not {action} {what}{resource}{why}",
            self.client_id
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(spec: GrantSpec) -> Access {
        Access::new(
            "alice".into(),
            Some(Arc::new(Grants::parse(&spec).unwrap())),
        )
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn publish_and_subscribe_follow_patterns() {
        let mut a = access(GrantSpec {
            publish: strs(&["orders.>"]),
            subscribe: strs(&["orders.* billing", "audit"]),
            ..Default::default()
        });
        assert!(a.check(Need::Publish("orders.eu")).is_ok());
        assert!(a.check(Need::Publish("orders.eu")).is_ok(), "cached");
        let e = a.check(Need::Publish("payments")).unwrap_err();
        assert!(
            e.to_string().contains("publish to topic \"payments\""),
            "{e}"
        );
        let sub = |topic, group| Need::Subscribe { topic, group };
        assert!(a.check(sub("orders.eu", Some("billing"))).is_ok());
        assert!(a.check(sub("orders.eu", Some("other"))).is_err());
        assert!(a.check(sub("orders.eu", None)).is_err(), "group-restricted");
        assert!(a.check(sub("audit", None)).is_ok());
        assert!(a.check(sub("audit", Some("any"))).is_ok());
        assert!(a.check(Need::Admin("orders.eu")).is_err());
        assert!(a.check(Need::See("orders.eu")).is_ok());
        assert!(a.check(Need::See("payments")).is_err());
    }

    #[test]
    fn inbox_rule_holds_whatever_the_grants() {
        let everything = GrantSpec {
            publish: strs(&[">"]),
            subscribe: strs(&[">"]),
            ..Default::default()
        };
        for mut a in [access(everything), Access::new("alice".into(), None)] {
            let sub = |topic| Need::Subscribe {
                topic,
                group: Some("inbox"),
            };
            assert!(a.check(sub("_inbox.alice")).is_ok());
            assert!(a.check(sub("_inbox.bob")).is_err());
            assert!(a.check(Need::Publish("_inbox.alice")).is_err());
            assert!(a.check(Need::Publish("_inbox.bob")).is_err());
            assert!(a.check(Need::Publish("orders")).is_ok());
        }
        // The owner sees and reads its inbox even with no grants at all.
        let mut none = access(GrantSpec::default());
        assert!(none.may_see("_inbox.alice"));
        assert!(none
            .check(Need::Subscribe {
                topic: "_inbox.alice",
                group: Some("inbox")
            })
            .is_ok());
    }

    /// A room's log is read with the permission to join the room (the
    /// handler then checks membership), and written by emits only.
    #[test]
    fn room_logs_follow_join_and_are_written_by_emits_only() {
        let mut a = access(GrantSpec {
            publish: strs(&[">"]),
            subscribe: strs(&[">"]),
            join: strs(&["chat.*"]),
            ..Default::default()
        });
        let sub = |topic| Need::Subscribe {
            topic,
            group: Some("alice"),
        };
        assert!(a.check(sub("_room.chat.1")).is_ok());
        assert!(a.check(sub("_room.secret")).is_err());
        assert!(a.check(Need::Publish("_room.chat.1")).is_err());
        let mut open = Access::new("alice".into(), None);
        assert!(open.check(sub("_room.secret")).is_ok());
        assert!(open.check(Need::Publish("_room.secret")).is_err());
    }

    #[test]
    fn emits_requests_and_replies() {
        let mut a = access(GrantSpec {
            join: strs(&["chat.*"]),
            emit: strs(&["chat.*"]),
            request: strs(&["bot"]),
            ..Default::default()
        });
        let room = EmitTarget::Room("chat.1".into());
        assert!(a
            .check(Need::Emit {
                target: &room,
                request: false
            })
            .is_ok());
        assert!(a
            .check(Need::Emit {
                target: &room,
                request: true
            })
            .is_err());
        let rooms = EmitTarget::Rooms {
            rooms: strs(&["chat.1", "ops"]),
            except_sender: false,
        };
        let e = a
            .check(Need::Emit {
                target: &rooms,
                request: false,
            })
            .unwrap_err();
        assert!(e.to_string().contains("emit to room \"ops\""), "{e}");
        let bot = EmitTarget::Client("bot".into());
        assert!(a
            .check(Need::Emit {
                target: &bot,
                request: true
            })
            .is_ok());
        assert!(a
            .check(Need::Emit {
                target: &bot,
                request: false
            })
            .is_err());
        assert!(a
            .check(Need::Emit {
                target: &EmitTarget::All,
                request: false
            })
            .is_err());
        assert!(a.check(Need::Reply("bot")).is_ok());
        assert!(a.check(Need::Reply("carol")).is_err());
        assert!(a.check(Need::Join("chat.1")).is_ok());
        assert!(a.check(Need::Join("chat.1.x")).is_err());
        let mut all = access(GrantSpec {
            emit: strs(&[">"]),
            ..Default::default()
        });
        assert!(all
            .check(Need::Emit {
                target: &EmitTarget::All,
                request: false
            })
            .is_ok());
    }

    #[test]
    fn refresh_forgets_decisions() {
        let mut a = access(GrantSpec {
            publish: strs(&["a"]),
            ..Default::default()
        });
        assert!(a.check(Need::Publish("a")).is_ok());
        a.set_grants(Some(Arc::new(Grants::default())));
        assert!(a.check(Need::Publish("a")).is_err());
    }

    #[test]
    fn bad_subscribe_grant() {
        let spec = GrantSpec {
            subscribe: strs(&["a b c"]),
            ..Default::default()
        };
        assert!(Grants::parse(&spec).is_err());
    }
}
