//! The cluster's address book: where each node's broker listener is.
//!
//! It starts as `--peers` says and, once the metadata group has a
//! membership, follows it: a node added with `herald cluster add` is known
//! to every node as soon as they apply the change, and a removed one is
//! forgotten. Raft's own calls take addresses from each group's
//! membership; this book serves everything else that names a node (a
//! NotLeader answer's leader, forwarding a write to a group's leader,
//! choosing a new topic's replicas, `herald cluster status`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::types::{Node, NodeId};

pub struct Peers {
    own: NodeId,
    book: RwLock<Arc<BTreeMap<NodeId, String>>>,
}

impl Peers {
    /// The book of node `own`, as `--peers` gave it.
    pub fn new(own: NodeId, given: BTreeMap<NodeId, String>) -> Peers {
        Peers {
            own,
            book: RwLock::new(Arc::new(given)),
        }
    }

    /// The address of node `id`, if known.
    pub fn get(&self, id: NodeId) -> Option<String> {
        self.all().get(&id).cloned()
    }

    /// Every known node and its address.
    pub fn all(&self) -> Arc<BTreeMap<NodeId, String>> {
        match self.book.read() {
            Ok(b) => b.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// This node's own address (as its peers reach it).
    pub fn own_address(&self) -> String {
        self.get(self.own).unwrap_or_default()
    }

    /// The metadata group applied a membership: its nodes (voters and
    /// learners) are the cluster from now on. This node keeps its own entry
    /// even once removed, so that it can still say where it is.
    pub fn learn<'a>(&self, nodes: impl Iterator<Item = (&'a NodeId, &'a Node)>) {
        let mut next: BTreeMap<NodeId, String> =
            nodes.map(|(id, n)| (*id, n.addr.clone())).collect();
        if next.is_empty() {
            return;
        }
        let mut book = match self.book.write() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        if let Some(own) = book.get(&self.own) {
            next.entry(self.own).or_insert_with(|| own.clone());
        }
        *book = Arc::new(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_follows_the_membership_and_keeps_this_node() {
        let given = BTreeMap::from([(1, "a:1".to_owned()), (2, "b:2".to_owned())]);
        let p = Peers::new(2, given);
        assert_eq!(p.get(1).as_deref(), Some("a:1"));
        let members = BTreeMap::from([(1, Node::new("a:1")), (4, Node::new("d:4"))]);
        p.learn(members.iter());
        assert_eq!(p.get(4).as_deref(), Some("d:4"));
        // Node 2 was removed, but still knows where it is itself.
        assert_eq!(p.own_address(), "b:2");
        assert_eq!(p.all().keys().copied().collect::<Vec<_>>(), vec![1, 2, 4]);
        // An empty membership (a node not yet added) changes nothing.
        p.learn(BTreeMap::new().iter());
        assert_eq!(p.all().len(), 3);
    }
}
