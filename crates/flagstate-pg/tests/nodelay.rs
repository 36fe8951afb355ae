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
        // Should a background task close it in between, the calls fail (EBADF) and the
        // socket is skipped; should the number be reused meanwhile, the peer is checked.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let peer = socket.peer_addr().ok().and_then(|a| a.as_socket());
        if peer.is_some_and(|p| p.port() == port)
            && let Ok(on) = socket.tcp_nodelay()
        {
            found.push(on);
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

    // The generation listener and poller open their connections in the background, and
    // a connection gets the option once it is established, after authentication: on a
    // busy machine one may still be in its handshake here. So wait (generously) for the
    // sockets to settle rather than catch one half made.
    let started = std::time::Instant::now();
    loop {
        let sockets = nodelay_of_sockets_to(port);
        assert!(
            !sockets.is_empty(),
            "no TCP connection to port {port} found"
        );
        if sockets.iter().all(|&on| on) {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "connections without TCP_NODELAY: {sockets:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
