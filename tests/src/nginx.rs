//! A real nginx in front of the agent, as an ingress proxy runs it: one
//! upstream (the agent's port) with a pool of keep-alive connections.
//! nginx is Debian's package, extracted by `tests/fixtures/prepare.sh`
//! (`cargo xtask setup --fixtures`) without installing or starting any
//! service; each test starts its own, in the foreground, on loopback, and
//! stops it by pid when dropped.
use std::{
    fs,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{free_port, wait_until};

/// The nginx binary: `WATT_NGINX`, or the one `prepare.sh` extracted.
#[must_use]
pub fn binary() -> PathBuf {
    std::env::var_os("WATT_NGINX").map_or_else(
        || crate::root().join("tests/fixtures/nginx/root/usr/sbin/nginx"),
        PathBuf::from,
    )
}

pub struct Nginx {
    child: Child,
    dir: PathBuf,
    pub addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx on a free loopback port, proxying to `upstream` over
    /// HTTP/1.1 with a keep-alive pool of `keepalive` idle connections
    /// (`proxy_set_header Connection ""`, as ingress-nginx does).
    #[must_use]
    pub fn start(upstream: SocketAddr, keepalive: u32) -> Self {
        let bin = binary();
        assert!(
            bin.exists(),
            "missing nginx at {}: run `cargo xtask setup --fixtures` (or set WATT_NGINX)",
            bin.display()
        );
        let port = free_port("127.0.0.1");
        let dir = std::env::temp_dir().join(format!("watt-nginx-{}-{port}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("nginx dir");
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\n\
             error_log {d}/error.log info;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n\
               client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
               scgi_temp_path {d}/scgi;\n\
               upstream app {{ server {upstream}; keepalive {keepalive}; }}\n\
               server {{\n    listen 127.0.0.1:{port};\n\
                 location / {{\n      proxy_pass http://app;\n\
                   proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
                   proxy_connect_timeout 5s;\n      proxy_read_timeout 10s;\n    }}\n  }}\n}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf).expect("nginx.conf");
        let child = Command::new(&bin)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let nginx = Self { child, dir, addr };
        assert!(
            wait_until(Duration::from_secs(10), || crate::agent::port_open(addr)),
            "nginx did not listen on {addr}; its error log:\n{}",
            nginx.error_log()
        );
        nginx
    }

    /// Its error log so far.
    #[must_use]
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
