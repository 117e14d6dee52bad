//! Which of a worker's epoll instances is its main event loop: the one its
//! listener is registered in, found through `/proc/<pid>/fdinfo`.
//!
//! The kernel's count of event-loop turns (`steering::LoopWatch`) counts
//! only the waits on that instance: `child_process.execSync` runs a private
//! libuv loop, with an epoll instance of its own, on the same thread, and a
//! wait there is not a turn of the loop that accepts connections.
use std::{fs, io};

/// The epoll fd of `pid` whose interest list holds the socket of inode
/// `listener_inode`; `None` if no epoll instance holds it (the worker does
/// not listen yet, or listens some other way).
pub fn main_loop_fd(pid: i32, listener_inode: u64) -> io::Result<Option<i32>> {
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // A vanished fd (closed meanwhile) is simply not the one.
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        if target.as_os_str() != "anon_inode:[eventpoll]" {
            continue;
        }
        let Ok(info) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
            continue;
        };
        if epoll_targets(&info).any(|ino| ino == listener_inode) {
            return Ok(Some(fd));
        }
    }
    Ok(None)
}

/// The inodes of the files an epoll instance watches, from its fdinfo:
/// one `tfd: <fd> events: .. data: .. pos:0 ino:<hex> sdev:..` line each.
pub fn epoll_targets(fdinfo: &str) -> impl Iterator<Item = u64> + '_ {
    fdinfo
        .lines()
        .filter(|l| l.starts_with("tfd:"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("ino:"))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd as _;

    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

    use super::*;

    #[test]
    fn fdinfo_lines_give_the_watched_inodes() {
        // As Linux 6.18 writes it, for a listener and an eventfd.
        let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t26\n\
                    tfd:        3 events:       19 data:                3  pos:0 ino:e73fb sdev:9\n\
                    tfd:       12 events:       19 data:               0c  pos:0 ino:41c sdev:f\n";
        assert_eq!(
            epoll_targets(info).collect::<Vec<_>>(),
            vec![0xe73fb, 0x41c]
        );
        assert_eq!(epoll_targets("pos:\t0\n").count(), 0);
    }

    #[test]
    fn the_epoll_instance_holding_the_listener_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = crate::sampler::socket_inode(std::os::fd::AsFd::as_fd(&listener)).unwrap();
        let other = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        let main = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        main.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, 0))
            .unwrap();
        let pid = i32::try_from(std::process::id()).unwrap();
        let found = main_loop_fd(pid, inode).unwrap();
        assert_eq!(found, Some(main.0.as_raw_fd()));
        assert_ne!(found, Some(other.0.as_raw_fd()));
        assert_eq!(main_loop_fd(pid, inode + 1).unwrap(), None);
    }
}
