//! `TCP_NODELAY` on the store's connections to PostgreSQL.
//!
//! sqlx 0.9.0 opens its TCP connections without `TCP_NODELAY` (sqlx issue 4335; the fix
//! was merged after that release). A message written in more than one piece then waits:
//! Nagle's algorithm holds back the last piece until the server acknowledges the ones
//! before it, and the server delays that acknowledgement by up to 40 ms because it is
//! waiting for the rest of the message. With TLS (what sqlx's default `sslmode=prefer`
//! negotiates with a stock PostgreSQL) every message over one 16 KiB record goes out in
//! pieces; without TLS every message over one segment does. A store binds messages that
//! size all the time: the digests a query loads (1,500 digests are 107 KB), and every
//! repository snapshot with its labels. Measured on the 100,000-image benchmark
//! (docs/performance.md): reading one query's list entries took 50 ms over TCP and 8 ms
//! over a Unix socket.
//!
//! sqlx gives no access to its socket, so right after each connection is made
//! ([`PgPoolOptions::after_connect`](sqlx::postgres::PgPoolOptions::after_connect)) every
//! TCP socket of this process whose peer is the database's port and that lacks
//! `TCP_NODELAY` gets it: the new connection, and any other connection to that port,
//! for which the option is just as right. Linux only (`/proc/self/fd`); elsewhere this
//! does nothing. Remove it once sqlx sets the option itself.

/// Sets `TCP_NODELAY` on every TCP socket of this process connected to `port` that does
/// not have it yet; returns how many it set.
#[cfg(target_os = "linux")]
pub(crate) fn set_on_sockets_to(port: u16) -> usize {
    use std::os::fd::{BorrowedFd, RawFd};

    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut set = 0;
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<RawFd>().ok())
        else {
            continue;
        };
        // Only sockets: the link reads `socket:[inode]`.
        let is_socket = std::fs::read_link(entry.path()).is_ok_and(|target| {
            target
                .as_os_str()
                .as_encoded_bytes()
                .starts_with(b"socket:")
        });
        if !is_socket {
            continue;
        }
        // SAFETY: the descriptor is only used for the three socket calls below, while
        // this process holds it open. Should another thread close it in between, the
        // calls fail with EBADF; should the number be reused meanwhile, they apply to
        // that socket, which is still checked to be TCP to the database port.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let to_database = socket
            .peer_addr()
            .ok()
            .and_then(|peer| peer.as_socket())
            .is_some_and(|peer| peer.port() == port);
        if to_database
            && socket.r#type().is_ok_and(|t| t == socket2::Type::STREAM)
            && socket.tcp_nodelay().is_ok_and(|on| !on)
            && socket.set_tcp_nodelay(true).is_ok()
        {
            set += 1;
        }
    }
    set
}

/// Does nothing: finding the sockets needs Linux's `/proc/self/fd`.
#[cfg(not(target_os = "linux"))]
pub(crate) fn set_on_sockets_to(_port: u16) -> usize {
    0
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn sockets_to_the_port_get_nodelay_and_others_are_left_alone() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let to_port = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let elsewhere = TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert!(!to_port.nodelay().unwrap());

        assert!(set_on_sockets_to(listener.local_addr().unwrap().port()) >= 1);
        assert!(to_port.nodelay().unwrap());
        assert!(!elsewhere.nodelay().unwrap());
        // Already set: nothing more to do.
        assert_eq!(set_on_sockets_to(listener.local_addr().unwrap().port()), 0);
    }
}
