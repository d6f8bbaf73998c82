//! A terminal chat on rooms: every user is a client id, joins durable rooms,
//! broadcasts lines to the current room, sends direct messages, and sees
//! who comes and goes. A user who quits and comes back first sees what they
//! missed, in order: it waited in their inbox.
//!
//! Run a broker (`cargo run --release --bin herald -- serve`), then in
//! several terminals:
//!
//! ```text
//! cargo run -p herald-examples --example chat -- lobby alice
//! cargo run -p herald-examples --example chat -- lobby bob
//! ```
//! The broker address is `--server HOST:PORT`, else `HERALD_SERVER`, else
//! 127.0.0.1:7400, as for the `herald` command line. Commands: `/msg USER TEXT`, `/join ROOM` (and make it
//! the current room), `/leave ROOM`, `/who`, `/quit` (leaves the current room),
//! Ctrl-D (goes away but stays a member: come back to catch up).

use anyhow::bail;
use futures::StreamExt;
use herald_client::{Client, ConnectionEvent, Event};
use tokio::sync::mpsc;

fn show(ev: &Event) {
    let text = String::from_utf8_lossy(ev.payload());
    let room = ev.room().unwrap_or("-");
    match (ev.is_presence(), ev.name()) {
        (true, "join") => println!("* {} joined {room}", ev.sender()),
        (true, "leave") => println!("* {} left {room}", ev.sender()),
        (true, "connect") => println!("* {} is back in {room}", ev.sender()),
        (true, "disconnect") => println!("* {} went away from {room}", ev.sender()),
        (false, "dm") => println!("(direct) <{}> {text}", ev.sender()),
        (false, _) => println!("[{room}] <{}> {text}", ev.sender()),
        (true, other) => println!("* {other} {} {room}", ev.sender()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (addr, args) = herald_examples::args()?;
    let (Some(first_room), Some(user)) = (args.first(), args.get(1)) else {
        bail!("usage: chat ROOM USER [--server HOST:PORT]");
    };
    // The user name is the client id: it is how others address direct
    // messages, and what makes the inbox this user's across runs.
    let client = Client::builder(addr.as_str())
        .client_id(user.clone())
        .client_name("herald-chat")
        .connect()
        .await?;

    let mut events = client.events();
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            match ev {
                ConnectionEvent::Disconnected { reason } => eprintln!("* disconnected: {reason}"),
                ConnectionEvent::Reconnected => eprintln!("* reconnected"),
                _ => {}
            }
        }
    });

    let mut room = first_room.clone();
    // The rooms joined, the last one joined last.
    let mut joined = vec![room.clone()];
    client.join_durable(&room).await?;
    println!("* you are {user} in {room}; /msg USER TEXT, /join ROOM, /leave ROOM, /who, /quit");

    // What arrived while this user was away comes first, then live events.
    let mut inbox = client.inbox().await?;
    tokio::spawn(async move {
        while let Some(ev) = inbox.next().await {
            let Ok(ev) = ev else { break };
            show(&ev);
            if ev.ack().await.is_err() {
                break;
            }
        }
    });

    // Terminal input is blocking I/O: read it on its own thread.
    let (tx, mut lines) = mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        let line = line.trim();
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        let r = match cmd {
            "" => Ok(()),
            "/msg" => match rest.split_once(' ') {
                Some((to, text)) => client
                    .emit_to_client(to, "dm", text.to_owned())
                    .await
                    .map(|_| ()),
                None => {
                    println!("* usage: /msg USER TEXT");
                    Ok(())
                }
            },
            "/join" if !rest.is_empty() => {
                room = rest.to_owned();
                joined.retain(|r| r != rest);
                joined.push(room.clone());
                client.join_durable(&room).await
            }
            "/leave" if !rest.is_empty() => {
                let left = client.leave(rest).await;
                joined.retain(|r| r != rest);
                // Lines go to the room joined last of those still joined.
                if rest == room {
                    match joined.last() {
                        Some(r) => {
                            room = r.clone();
                            println!("* now in {room}");
                        }
                        None => {
                            room.clear();
                            println!("* in no room now; /join ROOM");
                        }
                    }
                }
                left
            }
            _ if room.is_empty() && !cmd.starts_with('/') => {
                println!("* in no room: /join ROOM first");
                Ok(())
            }
            "/who" => client.members(&room).await.map(|members| {
                for m in members {
                    let state = if m.online { "online" } else { "away" };
                    println!("* {} ({state})", m.client_id);
                }
            }),
            "/quit" => {
                if !room.is_empty() {
                    client.leave(&room).await?;
                }
                break;
            }
            _ => client
                .broadcast(&room, "message", line.to_owned())
                .await
                .map(|_| ()),
        };
        if let Err(e) = r {
            println!("* {e}");
        }
    }
    client.close().await;
    Ok(())
}
