//! The store's TCP connections to PostgreSQL carry `TCP_NODELAY` (src/nodelay.rs says
//! why). A test binary of its own, so the only sockets to the server in this process are
//! the store's. The check reads the process's sockets itself rather than through the
//! store's code, so a mistake there cannot hide. Linux only, like the fix.
#![cfg(target_os = "linux")]

mod common;

use std::os::fd::{BorrowedFd, RawFd};
use std::str::FromStr;

use flagstate_core::Store;
use flagstate_core::conformance::fixtures::{image, put_image, query, repo};

/// `TCP_NODELAY` of every TCP socket of this process whose peer is `port`.
fn nodelay_of_sockets_to(port: u16) -> Vec<bool> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !target.to_string_lossy().starts_with("socket:") {
            continue;
        }
        // SAFETY: used for two socket calls while this process holds the descriptor open.
        // The store is idle here: nothing opens or closes its connections meanwhile.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let peer = socket.peer_addr().ok().and_then(|a| a.as_socket());
        if peer.is_some_and(|p| p.port() == port) {
            found.push(socket.tcp_nodelay().unwrap());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_to_the_server_has_nodelay() {
    let Some(url) = common::pg_url() else { return };
    let port = sqlx::postgres::PgConnectOptions::from_str(&url)
        .unwrap()
        .get_port();
    let store = common::TestStore::new(&url).await;
    // Several connections at once: the pool opens more than its first.
    let change = put_image("r", "v1", &image("a").build());
    let snapshot = repo("s").image("v1", &image("b").build()).build();
    let everything = query("");
    let (a, b, c) = tokio::join!(
        store.apply(&change),
        store.replace_repository(&snapshot),
        store.query(&everything),
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();

    let sockets = nodelay_of_sockets_to(port);
    assert!(
        !sockets.is_empty(),
        "no TCP connection to port {port} found"
    );
    assert!(
        sockets.iter().all(|&on| on),
        "connections without TCP_NODELAY: {sockets:?}"
    );
}
