//! Authentication and permissions against a real broker over TCP: the
//! hostile suite (every request refused before Hello, without a token,
//! with a bad signature, with an expired token, and without the
//! permission, leaving topics, group positions and rooms unchanged),
//! impersonation, expiry, refresh, the safe default and the per-address
//! connection cap.

mod common;

use std::time::Duration;

use common::{Raw, T};
use herald_broker::auth::jwt::{self, Claims};
use herald_broker::auth::tokens::{self, ClientIds, StaticToken};
use herald_broker::auth::{AuthConfig, GrantSpec, Grants};
use herald_broker::BrokerConfig;
use herald_protocol::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";
const OPS_TOKEN: &str = "ops-static-token-for-tests";

fn all() -> Vec<String> {
    vec![">".to_string()]
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn everything() -> GrantSpec {
    GrantSpec {
        publish: all(),
        subscribe: all(),
        admin: all(),
        join: all(),
        emit: all(),
        request: all(),
        // Speaking for a cluster node is not a topic or room permission.
        cluster: false,
    }
}

fn secure_config(dir: &std::path::Path) -> BrokerConfig {
    let ops = StaticToken {
        name: "ops".into(),
        sha256: tokens::digest(OPS_TOKEN),
        client_ids: ClientIds::Exactly("ops".into()),
        grants: Grants::parse(&everything()).unwrap(),
    };
    BrokerConfig {
        auth: AuthConfig {
            tokens: vec![ops],
            jwt_secret: Some(SECRET.to_vec()),
            jwt_leeway: Duration::ZERO,
            ..Default::default()
        },
        ..common::config(dir)
    }
}

fn mint(secret: &[u8], sub: &str, ttl_secs: i64, grants: GrantSpec) -> String {
    let exp = (jwt::now_secs() as i64 + ttl_secs).max(0) as u64;
    let c = Claims {
        sub: sub.into(),
        exp,
        nbf: None,
        iat: None,
        herald: grants,
    };
    jwt::mint_hs256(secret, &c).unwrap()
}

fn code(m: &Message) -> Option<ErrorCode> {
    match m {
        Message::Error(e) => Some(ErrorCode::from_u16(e.code)),
        _ => None,
    }
}

/// Topics, group positions and members, and the lobby's members: what no
/// refused request may change.
async fn snapshot(ops: &mut Raw) -> String {
    let topics = match ops.request(Message::ListTopics).await {
        Message::TopicList(l) => l.topics,
        m => panic!("{m:?}"),
    };
    let mut out = Vec::new();
    for t in topics {
        let groups: Vec<_> = t
            .groups
            .iter()
            .map(|g| (g.name.clone(), g.ack_floor, g.in_flight, g.members.clone()))
            .collect();
        out.push(format!(
            "{} {}..{} {:?}",
            t.name, t.first_offset, t.next_offset, groups
        ));
    }
    out.sort();
    let lobby = ops
        .request(Message::Members(RoomName {
            room: "lobby".into(),
        }))
        .await;
    format!("{out:?} {lobby:?}")
}

/// A topic with three messages and a group that acked one, and a durable
/// room with one member: the state the hostile requests aim at.
async fn seed(addr: std::net::SocketAddr) -> Raw {
    let mut ops = Raw::connect_with_token(addr, None, Some(OPS_TOKEN))
        .await
        .unwrap();
    assert_eq!(ops.client_id, "ops");
    ops.create_topic("orders").await;
    ops.publish("orders", &[b"1", b"2", b"3"]).await;
    let sub = ops
        .subscribe("orders", Some("billing"), StartPosition::Earliest, 1)
        .await;
    let (_, _, recs) = ops.next_delivery().await;
    let first = recs[0].offset;
    let id = ops
        .send(Message::Ack(Ack {
            subscription_id: sub,
            kind: AckKind::Ack,
            ranges: vec![(first, first)],
        }))
        .await;
    assert_eq!(ops.wait_reply(id).await, Message::Ok);
    let id = ops
        .send(Message::Unsubscribe(Unsubscribe {
            subscription_id: sub,
        }))
        .await;
    assert_eq!(ops.wait_reply(id).await, Message::Ok);
    let mut carol =
        Raw::connect_with_token(addr, None, Some(&mint(SECRET, "carol", 600, everything())))
            .await
            .unwrap();
    let joined = carol
        .request(Message::Join(JoinRoom {
            room: "lobby".into(),
            durable: true,
            history: 0,
        }))
        .await;
    assert_eq!(joined, Message::Ok);
    ops
}

/// One of every request, each aimed at the seeded state.
fn requests() -> Vec<(&'static str, Message)> {
    let sub = |group: Option<&str>, topic: &str| {
        Message::Subscribe(Subscribe {
            topic: topic.into(),
            group: group.map(str::to_owned),
            start: StartPosition::Earliest,
            prefetch_messages: 10,
            prefetch_bytes: 1 << 20,
            ack_timeout_ms: 0,
            max_deliveries: 0,
        })
    };
    let name = |n: &str| TopicName { name: n.into() };
    let room = |r: &str| RoomName { room: r.into() };
    let emit = |target| {
        Message::Emit(Emit {
            target,
            event: "evil".into(),
            payload: b"x".to_vec(),
            correlation: 0,
        })
    };
    vec![
        (
            "publish",
            Message::Publish {
                topic: "orders".into(),
                batch: common::batch(&[b"evil"], 0, 0),
            },
        ),
        ("subscribe", sub(Some("billing"), "orders")),
        ("subscribe", sub(None, "orders")),
        ("subscribe", sub(Some("inbox"), "_inbox.carol")),
        (
            "unsubscribe",
            Message::Unsubscribe(Unsubscribe { subscription_id: 1 }),
        ),
        (
            "ack",
            Message::Ack(Ack {
                subscription_id: 1,
                kind: AckKind::AckUpTo,
                ranges: vec![(0, 100)],
            }),
        ),
        (
            "flow",
            Message::Flow(Flow {
                subscription_id: 1,
                messages: 10,
                bytes: 10,
            }),
        ),
        (
            "create",
            Message::CreateTopic(CreateTopic {
                name: "evil".into(),
                config: TopicConfig::default(),
                replicas: 0,
            }),
        ),
        ("delete", Message::DeleteTopic(name("orders"))),
        ("list", Message::ListTopics),
        ("describe", Message::DescribeTopic(name("orders"))),
        ("groups", Message::ListGroups(name("orders"))),
        (
            "reset",
            Message::ResetGroup(ResetGroup {
                topic: "orders".into(),
                group: "billing".into(),
                to: StartPosition::Latest,
            }),
        ),
        (
            "repair",
            Message::RepairTopic(RepairTopic {
                name: "orders".into(),
                dry_run: false,
            }),
        ),
        (
            "join",
            Message::Join(JoinRoom {
                room: "lobby".into(),
                durable: true,
                history: 0,
            }),
        ),
        ("leave", Message::Leave(room("lobby"))),
        ("members", Message::Members(room("lobby"))),
        ("emit", emit(EmitTarget::Room("lobby".into()))),
        ("emit", emit(EmitTarget::All)),
        ("emit", emit(EmitTarget::Client("carol".into()))),
        (
            "emit batch",
            Message::EmitBatch(EmitBatch {
                emits: [
                    EmitTarget::Room("lobby".into()),
                    EmitTarget::All,
                    EmitTarget::Client("carol".into()),
                ]
                .into_iter()
                .map(|target| match emit(target) {
                    Message::Emit(e) => e,
                    _ => unreachable!(),
                })
                .collect(),
            }),
        ),
        (
            "reply",
            Message::Reply(ReplyTo {
                to_client: "carol".into(),
                correlation: 7,
                payload: b"x".to_vec(),
            }),
        ),
        (
            "refresh",
            Message::Refresh(Refresh {
                token: "not-a-token".into(),
            }),
        ),
    ]
}

/// Sends Hello with `token` and `req` right behind it: the broker must
/// refuse the Hello with `want` and close without serving `req`.
async fn refused_at_hello(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    req: Message,
    want: ErrorCode,
) {
    let mut r = Raw::unhandshaken(addr).await;
    let hello = Message::Hello(Hello {
        min_version: 1,
        max_version: 1,
        client_name: "hostile".into(),
        client_id: None,
        token: token.map(str::to_owned),
    });
    r.send(hello).await;
    r.send(req).await;
    let f = r.recv().await.expect("an error before the close");
    let m = Message::decode(&f).unwrap();
    assert_eq!(code(&m), Some(want), "{m:?}");
    if let Message::Error(e) = &m {
        if let Some(t) = token {
            assert!(!e.message.contains(t), "the error echoes the token");
        }
    }
    assert!(r.recv().await.is_none(), "the connection must be closed");
}

#[tokio::test]
async fn hostile_requests_change_nothing() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let b = herald_broker::server::start(secure_config(dir.path()))
            .await
            .unwrap();
        let addr = b.local_addr();
        let mut ops = seed(addr).await;
        let before = snapshot(&mut ops).await;

        let wrong = mint(
            b"another-secret-another-secret-another",
            "alice",
            600,
            everything(),
        );
        let expired = mint(SECRET, "alice", -60, everything());
        for (what, req) in requests() {
            // (a) before Hello.
            let mut r = Raw::unhandshaken(addr).await;
            r.send(req.clone()).await;
            let m = Message::decode(&r.recv().await.expect("an error")).unwrap();
            assert_eq!(
                code(&m),
                Some(ErrorCode::HandshakeRequired),
                "{what}: {m:?}"
            );
            assert!(r.recv().await.is_none(), "{what}: still open");
            // (b) no token, (c) a wrong signature, (d) an expired token.
            refused_at_hello(addr, None, req.clone(), ErrorCode::Unauthorized).await;
            refused_at_hello(addr, Some(&wrong), req.clone(), ErrorCode::Unauthorized).await;
            refused_at_hello(addr, Some(&expired), req.clone(), ErrorCode::TokenExpired).await;
        }

        // (e) a valid token without the permissions: each request refused
        // (or, for those that only touch the connection's own state,
        // without effect), and the connection stays usable.
        let narrow = GrantSpec {
            publish: strs(&["alice.>"]),
            subscribe: strs(&["alice.>"]),
            join: strs(&["alice.*"]),
            emit: strs(&["alice.*"]),
            ..Default::default()
        };
        let mut alice =
            Raw::connect_with_token(addr, None, Some(&mint(SECRET, "alice", 600, narrow)))
                .await
                .unwrap();
        assert_eq!(alice.client_id, "alice");
        let own_state = ["unsubscribe", "ack", "flow", "leave", "list", "refresh"];
        for (what, req) in requests() {
            if what == "flow" {
                // Flow is never answered.
                alice.send_no_reply(req).await;
                continue;
            }
            let m = alice.request(req).await;
            if what == "emit batch" {
                // Each emit is checked on its own, and each refused.
                let Message::EmitBatchOk(ok) = &m else {
                    panic!("{what}: {m:?}")
                };
                assert_eq!(ok.results.len(), 3, "{m:?}");
                for r in &ok.results {
                    let EmitOutcome::Err(e) = r else {
                        panic!("{what}: {r:?}")
                    };
                    assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::Unauthorized);
                    assert!(e.message.contains("\"alice\" may not"), "{}", e.message);
                }
                continue;
            }
            if !own_state.contains(&what) {
                let Message::Error(e) = &m else {
                    panic!("{what}: {m:?}")
                };
                assert_eq!(
                    ErrorCode::from_u16(e.code),
                    ErrorCode::Unauthorized,
                    "{what}: {e:?}"
                );
                assert!(
                    e.message.contains("\"alice\" may not"),
                    "{what}: {}",
                    e.message
                );
            }
            if what == "publish" {
                assert!(
                    format!("{m:?}").contains("publish to topic \\\"orders\\\""),
                    "{m:?}"
                );
            }
            if what == "list" {
                let Message::TopicList(l) = &m else {
                    panic!("{m:?}")
                };
                assert!(l.topics.is_empty(), "alice sees {:?}", l.topics);
            }
            if what == "refresh" {
                assert_eq!(code(&m), Some(ErrorCode::Unauthorized), "{m:?}");
            }
        }
        assert_eq!(alice.request(Message::Ping).await, Message::Pong);
        assert_eq!(snapshot(&mut ops).await, before);
        // What alice may do, she can: in one batch, her emit goes and the
        // other is refused.
        alice.publish("alice.notes", &[b"mine"]).await;
        let results = alice
            .emit_batch(&[("alice.room", "note"), ("lobby", "note")])
            .await;
        assert!(matches!(results[0], EmitOutcome::Ok(_)), "{results:?}");
        assert!(
            matches!(&results[1], EmitOutcome::Err(e) if ErrorCode::from_u16(e.code) == ErrorCode::Unauthorized),
            "{results:?}"
        );
        b.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn no_one_can_be_someone_else() {
    tokio::time::timeout(T * 3, async {
        let dir = tempfile::tempdir().unwrap();
        let b = herald_broker::server::start(secure_config(dir.path()))
            .await
            .unwrap();
        let addr = b.local_addr();
        let bob_grants = GrantSpec {
            emit: strs(&["alice"]),
            ..everything()
        };
        let bob_token = mint(SECRET, "bob", 600, bob_grants);
        // Claiming alice's id with bob's token is refused at Hello.
        let e = Raw::connect_with_token(addr, Some("alice"), Some(&bob_token))
            .await
            .err()
            .expect("refused");
        assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::Unauthorized);
        assert!(e.message.contains("\"alice\""), "{}", e.message);
        // So is a static token's name claimed by someone else.
        let e = Raw::connect_with_token(addr, Some("alice"), Some(OPS_TOKEN))
            .await
            .err()
            .expect("refused");
        assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::Unauthorized);

        let mut alice = Raw::connect_with_token(
            addr,
            None,
            Some(&mint(SECRET, "alice", 600, GrantSpec::default())),
        )
        .await
        .unwrap();
        let inbox = alice
            .subscribe("_inbox.alice", Some("inbox"), StartPosition::Earliest, 10)
            .await;
        let mut bob = Raw::connect_with_token(addr, None, Some(&bob_token))
            .await
            .unwrap();
        assert_eq!(bob.client_id, "bob");
        // bob may subscribe to everything, but not to alice's inbox...
        for group in [Some("inbox"), Some("other"), None] {
            let m = bob
                .request(Message::Subscribe(Subscribe {
                    topic: "_inbox.alice".into(),
                    group: group.map(str::to_owned),
                    start: StartPosition::Earliest,
                    prefetch_messages: 10,
                    prefetch_bytes: 1 << 20,
                    ack_timeout_ms: 0,
                    max_deliveries: 0,
                }))
                .await;
            assert_eq!(code(&m), Some(ErrorCode::Unauthorized), "{m:?}");
        }
        // ...nor write into it as if he were the broker...
        let forged = bob
            .publish_seq("_inbox.alice", &[b"from alice, honest"], 0, 0)
            .await
            .unwrap_err();
        assert_eq!(ErrorCode::from_u16(forged.code), ErrorCode::Unauthorized);
        // ...and what he emits to her says it is from bob.
        let m = bob
            .request(Message::Emit(Emit {
                target: EmitTarget::Client("alice".into()),
                event: "hi".into(),
                payload: b"hello".to_vec(),
                correlation: 0,
            }))
            .await;
        assert!(matches!(m, Message::EmitOk(_)), "{m:?}");
        let (sub, _, recs) = alice.next_delivery().await;
        assert_eq!(sub, inbox);
        let sender: Vec<_> = recs[0]
            .headers()
            .filter(|(k, _)| *k == rooms::headers::SENDER)
            .map(|(_, v)| v.to_vec())
            .collect();
        assert_eq!(sender, vec![b"bob".to_vec()]);
        assert_eq!(recs.len(), 1, "only bob's emit reached the inbox");
        b.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_unrefreshed_token_ends_the_connection_and_a_refreshed_one_does_not() {
    tokio::time::timeout(T * 3, async {
        let dir = tempfile::tempdir().unwrap();
        let b = herald_broker::server::start(secure_config(dir.path()))
            .await
            .unwrap();
        let addr = b.local_addr();
        let mut ops = Raw::connect_with_token(addr, None, Some(OPS_TOKEN))
            .await
            .unwrap();
        ops.create_topic("feed").await;
        let reader = GrantSpec {
            subscribe: strs(&["feed"]),
            ..Default::default()
        };
        let start = tokio::time::Instant::now();
        // One that refreshes when told (its first token lasts 3 s).
        let mut kept =
            Raw::connect_with_token(addr, None, Some(&mint(SECRET, "erin", 3, reader.clone())))
                .await
                .unwrap();
        let kept_sub = kept
            .subscribe("feed", None, StartPosition::Latest, 100)
            .await;
        // One that does not (2 s): told about it first, then cut off.
        let mut short =
            Raw::connect_with_token(addr, None, Some(&mint(SECRET, "dave", 2, reader.clone())))
                .await
                .unwrap();
        short
            .subscribe("feed", None, StartPosition::Latest, 100)
            .await;

        let f = kept.recv().await.expect("a notice");
        assert!(matches!(
            Message::decode(&f).unwrap(),
            Message::TokenExpiring(_)
        ));
        // A token for someone else is refused and changes nothing.
        let other = mint(SECRET, "mallory", 600, reader.clone());
        let m = kept
            .request(Message::Refresh(Refresh { token: other }))
            .await;
        assert_eq!(code(&m), Some(ErrorCode::Unauthorized), "{m:?}");
        let fresh = mint(SECRET, "erin", 600, reader);
        assert_eq!(
            kept.request(Message::Refresh(Refresh { token: fresh }))
                .await,
            Message::Ok
        );

        let f = short.recv().await.expect("a notice");
        match Message::decode(&f).unwrap() {
            Message::TokenExpiring(t) => assert!(t.expires_in_ms <= 2000, "{t:?}"),
            m => panic!("{m:?}"),
        }
        let f = short.recv().await.expect("the expiry");
        let m = Message::decode(&f).unwrap();
        assert_eq!(code(&m), Some(ErrorCode::TokenExpired), "{m:?}");
        assert_eq!(f.header.request_id, 0);
        assert!(short.recv().await.is_none(), "closed after expiry");

        // Well past the first token's expiry, deliveries still flow.
        tokio::time::sleep_until(start + Duration::from_millis(3500)).await;
        ops.publish("feed", &[b"still here"]).await;
        let (sub, _, recs) = kept.next_delivery().await;
        assert_eq!(
            (sub, recs[0].payload.as_ref()),
            (kept_sub, &b"still here"[..])
        );
        b.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_refresh_with_narrower_permissions_ends_what_they_no_longer_cover() {
    tokio::time::timeout(T, async {
        let dir = tempfile::tempdir().unwrap();
        let b = herald_broker::server::start(secure_config(dir.path()))
            .await
            .unwrap();
        let addr = b.local_addr();
        let mut ops = Raw::connect_with_token(addr, None, Some(OPS_TOKEN))
            .await
            .unwrap();
        ops.create_topic("a").await;
        ops.create_topic("b").await;
        let both = GrantSpec {
            subscribe: strs(&["a", "b"]),
            ..Default::default()
        };
        let mut c = Raw::connect_with_token(addr, None, Some(&mint(SECRET, "fay", 600, both)))
            .await
            .unwrap();
        let sa = c.subscribe("a", None, StartPosition::Latest, 10).await;
        let sb = c.subscribe("b", None, StartPosition::Latest, 10).await;
        let only_a = GrantSpec {
            subscribe: strs(&["a"]),
            ..Default::default()
        };
        let token = mint(SECRET, "fay", 600, only_a);
        let id = c.send(Message::Refresh(Refresh { token })).await;
        let mut ended = None;
        loop {
            let f = c.recv().await.expect("open");
            match Message::decode(&f).unwrap() {
                Message::SubscriptionError(e) => ended = Some(e),
                Message::Ok if f.header.request_id == id => break,
                m => panic!("{m:?}"),
            }
        }
        let e = ended.expect("subscription to b ended");
        assert_eq!(
            (e.subscription_id, ErrorCode::from_u16(e.code)),
            (sb, ErrorCode::Unauthorized)
        );
        ops.publish("a", &[b"x"]).await;
        let (sub, _, _) = c.next_delivery().await;
        assert_eq!(sub, sa);
        b.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn eddsa_tokens_verify_with_the_public_key_and_hmac_with_it_does_not() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    tokio::time::timeout(T, async {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let public_pem = key.public_key_pem();
        let cfg = BrokerConfig {
            auth: AuthConfig {
                jwt_public_key_pem: Some(public_pem.clone().into_bytes()),
                ..Default::default()
            },
            ..common::config(dir.path())
        };
        let b = herald_broker::server::start(cfg).await.unwrap();
        let claims = Claims {
            sub: "gus".into(),
            exp: jwt::now_secs() + 600,
            nbf: None,
            iat: None,
            herald: GrantSpec::default(),
        };
        let signing = EncodingKey::from_ed_pem(key.serialize_pem().as_bytes()).unwrap();
        let ed = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &signing).unwrap();
        let r = Raw::connect_with_token(b.local_addr(), None, Some(&ed))
            .await
            .unwrap();
        assert_eq!(r.client_id, "gus");
        // The old trick: an HS256 token whose "secret" is the public key.
        let confused = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(public_pem.as_bytes()),
        )
        .unwrap();
        let e = Raw::connect_with_token(b.local_addr(), None, Some(&confused))
            .await
            .err()
            .expect("refused");
        assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::Unauthorized);
        b.shutdown().await;
    })
    .await
    .unwrap();
}

/// A 2048-bit RSA key made for these tests only (`openssl genpkey`).
const RSA_PRIVATE: &str = include_str!("fixtures/test-rsa.key");
const RSA_PUBLIC: &str = include_str!("fixtures/test-rsa.pub");

#[tokio::test]
async fn rs256_tokens_verify_with_an_rsa_public_key() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    tokio::time::timeout(T, async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BrokerConfig {
            auth: AuthConfig {
                jwt_public_key_pem: Some(RSA_PUBLIC.as_bytes().to_vec()),
                ..Default::default()
            },
            ..common::config(dir.path())
        };
        let b = herald_broker::server::start(cfg).await.unwrap();
        let claims = Claims {
            sub: "hal".into(),
            exp: jwt::now_secs() + 600,
            nbf: None,
            iat: None,
            herald: GrantSpec::default(),
        };
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let rs = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap();
        let r = Raw::connect_with_token(b.local_addr(), None, Some(&rs))
            .await
            .unwrap();
        assert_eq!(r.client_id, "hal");
        // A token with a tampered payload fails the signature.
        let mut parts: Vec<&str> = rs.split('.').collect();
        let forged_claims = Claims {
            sub: "root".into(),
            ..claims
        };
        let forged_body =
            jsonwebtoken::encode(&Header::new(Algorithm::RS256), &forged_claims, &key).unwrap();
        let forged_payload = forged_body.split('.').nth(1).unwrap().to_owned();
        parts[1] = &forged_payload;
        let e = Raw::connect_with_token(b.local_addr(), None, Some(&parts.join(".")))
            .await
            .err()
            .expect("refused");
        assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::Unauthorized);
        b.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_network_address_without_auth_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BrokerConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..common::config(dir.path())
    };
    let e = herald_broker::server::start(cfg)
        .await
        .err()
        .expect("refused");
    let msg = e.to_string();
    assert!(
        msg.contains("--allow-anonymous") && msg.contains("--jwt-secret-file"),
        "{msg}"
    );
}

/// The HTTP (WebSocket) listener is held to the same rule as TCP.
#[tokio::test]
async fn a_network_http_address_without_auth_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BrokerConfig {
        http: Some("0.0.0.0:0".parse().unwrap()),
        ..common::config(dir.path())
    };
    let e = herald_broker::server::start(cfg)
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("0.0.0.0"), "{e}");
}

#[tokio::test]
async fn one_address_gets_at_most_its_share_of_connections() {
    tokio::time::timeout(T, async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BrokerConfig {
            max_connections_per_address: 2,
            ..common::config(dir.path())
        };
        let b = herald_broker::server::start(cfg).await.unwrap();
        let addr = b.local_addr();
        let first = Raw::connect(addr).await;
        let _second = Raw::connect(addr).await;
        let mut third = Raw::unhandshaken(addr).await;
        let f = third.recv().await.expect("told why");
        let m = Message::decode(&f).unwrap();
        assert_eq!(code(&m), Some(ErrorCode::Busy), "{m:?}");
        assert!(third.recv().await.is_none());
        // A slot comes back when a connection ends.
        drop(first);
        loop {
            let mut r = Raw::unhandshaken(addr).await;
            let hello = Message::Hello(Hello {
                min_version: 1,
                max_version: 1,
                client_name: "t".into(),
                client_id: None,
                token: None,
            });
            r.send(hello).await;
            let f = r.recv().await.expect("a reply");
            match Message::decode(&f).unwrap() {
                Message::HelloOk(_) => break,
                m => assert_eq!(code(&m), Some(ErrorCode::Busy), "{m:?}"),
            }
        }
        b.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn auth_off_keeps_every_client_working_without_tokens() {
    // The default: loopback, anonymous, any client id, ignoring tokens.
    let dir = tempfile::tempdir().unwrap();
    let b = common::start(dir.path()).await;
    let mut r = Raw::connect_with_token(b.local_addr(), Some("anyone"), Some("junk"))
        .await
        .unwrap();
    assert_eq!(r.client_id, "anyone");
    r.publish("t", &[b"x"]).await;
    assert_eq!(
        r.request(Message::Refresh(Refresh { token: "x".into() }))
            .await,
        Message::Ok
    );
    b.shutdown().await;
}

/// Raft calls between cluster nodes need the `cluster` permission, which
/// "everything" on topics and rooms does not include; a broker that is not
/// in a cluster refuses them whoever asks.
#[tokio::test]
async fn cluster_calls_need_the_cluster_permission() {
    let dir = tempfile::tempdir().unwrap();
    let broker = herald_broker::server::start(secure_config(dir.path()))
        .await
        .unwrap();
    let call = Message::Cluster(bytes::Bytes::from_static(b"\x00"));
    let all = mint(SECRET, "app", 60, everything());
    let mut app = Raw::connect_with_token(broker.local_addr(), Some("app"), Some(&all))
        .await
        .unwrap();
    assert_eq!(
        code(&app.request(call.clone()).await),
        Some(ErrorCode::Unauthorized)
    );
    let node = mint(
        SECRET,
        "node-2",
        60,
        GrantSpec {
            cluster: true,
            ..GrantSpec::default()
        },
    );
    let mut peer = Raw::connect_with_token(broker.local_addr(), Some("node-2"), Some(&node))
        .await
        .unwrap();
    // Allowed, but this broker is alone: refused as such.
    assert_eq!(
        code(&peer.request(call).await),
        Some(ErrorCode::InvalidArgument)
    );
    broker.shutdown().await;
}
