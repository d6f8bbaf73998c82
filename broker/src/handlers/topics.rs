//! Topic administration: create, delete, list, describe, repair. Changes
//! need the admin permission on the topic; reading a topic's description
//! needs any permission on it, and a list shows only such topics.

use herald_protocol::{CreateTopic, Message, RepairTopic, TopicInfo, TopicList, TopicName};

use super::Handler;
use crate::auth::Need;
use crate::session::{Close, Session};
use crate::BrokerError;

impl Handler for CreateTopic {
    fn needs(&self) -> Need<'_> {
        Need::Admin(&self.name)
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        if let Some(c) = s.shared.cluster.clone() {
            // In a cluster, topics are replicated (the broker's own `_`
            // topics stay on their node).
            if !self.name.starts_with('_') {
                if let Err(e) = crate::topic::name::validate("topic", &self.name)
                    .and_then(|_| crate::topic::registry::validate_config(&self.config))
                {
                    return s.reply(id, e.to_message()).await;
                }
                let reg = s.shared.registry.clone();
                return s.later(id, async move {
                    let created = c
                        .create_topic(&self.name, &self.config, self.replicas)
                        .await?;
                    match reg.get(&self.name) {
                        Ok(t) => t.info().await.map(Message::TopicInfo),
                        // Created on other nodes (this one holds no
                        // replica): a new topic is empty.
                        Err(_) if created => Ok(Message::TopicInfo(TopicInfo {
                            name: self.name,
                            config: self.config,
                            first_offset: 0,
                            next_offset: 0,
                            bytes_on_disk: 0,
                            segments: 0,
                            messages_per_sec: 0.0,
                            groups: Vec::new(),
                        })),
                        // It existed, elsewhere, or this node did not open
                        // its replica in time.
                        Err(_) => Err(BrokerError::Busy(format!(
                            "topic {:?} exists in the cluster, but this node serves no copy of it; describe it on a node that does (herald cluster status)",
                            self.name
                        ))),
                    }
                });
            }
        }
        if self.replicas > 1 {
            let e = BrokerError::InvalidArgument(format!(
                "{} replicas asked, but this broker is not in a cluster (docs/cluster.md)",
                self.replicas
            ));
            return s.reply(id, e.to_message()).await;
        }
        match s.shared.registry.create(&self.name, &self.config, false) {
            Ok(t) => s.later(id, async move { t.info().await.map(Message::TopicInfo) }),
            Err(e) => s.reply(id, e.to_message()).await,
        }
    }
}

pub(crate) struct DeleteTopic(pub(crate) TopicName);

impl Handler for DeleteTopic {
    fn needs(&self) -> Need<'_> {
        Need::Admin(&self.0.name)
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        if let Some(c) = s.shared.cluster.clone() {
            if c.is_replicated(&self.0.name) {
                // Every node lets its replica go (docs/cluster.md).
                return s.later(id, async move {
                    c.delete_topic(&self.0.name).await.map(|_| Message::Ok)
                });
            }
        }
        let reg = s.shared.registry.clone();
        s.later(id, async move {
            reg.delete(&self.0.name).await.map(|_| Message::Ok)
        })
    }
}

/// ListTopics: every topic the connection may see.
pub(crate) struct ListTopics;

impl Handler for ListTopics {
    fn needs(&self) -> Need<'_> {
        Need::Nothing
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        let visible: Vec<_> = s
            .shared
            .registry
            .list()
            .into_iter()
            .filter(|t| s.access.may_see(&t.name))
            .collect();
        s.later(id, async move {
            let mut topics = Vec::with_capacity(visible.len());
            for t in visible {
                topics.push(t.info().await?);
            }
            Ok(Message::TopicList(TopicList { topics }))
        })
    }
}

pub(crate) struct DescribeTopic(pub(crate) TopicName);

impl Handler for DescribeTopic {
    fn needs(&self) -> Need<'_> {
        Need::See(&self.0.name)
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        match s.shared.registry.get(&self.0.name) {
            Ok(t) => s.later(id, async move { t.info().await.map(Message::TopicInfo) }),
            Err(e) => s.reply(id, e.to_message()).await,
        }
    }
}

impl Handler for RepairTopic {
    fn needs(&self) -> Need<'_> {
        Need::Admin(&self.name)
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        let reg = s.shared.registry.clone();
        s.later(id, async move {
            reg.repair(&self.name, self.dry_run)
                .await
                .map(Message::RepairReport)
        })
    }
}
