//! `iqd serve` under test: a server on a free loopback port with its own fabric file, token and
//! store, driven by the `ibm-vpc` SDK (tests/vpc/vpc.py in the virtualenv `cargo xtask setup`
//! makes under target/) or by raw HTTP; killed (by pid) and its fabric taken down on drop.
use std::{
    fs,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{iqd, iqd_bin, require_root, test_datapath, text, unique, wait_until};

/// The virtualenv's python with `ibm-vpc` (made by `cargo xtask setup`).
pub fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/vpc-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `cargo xtask setup` (it makes the virtualenv with the ibm-vpc SDK)",
        python.display()
    );
    python
}

pub struct Served {
    /// Unique prefix: the VPC's (fabric's) name and the start of its servers' names.
    pub name: String,
    pub config: PathBuf,
    pub token_file: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Served {
    /// Starts `iqd serve` on a new fabric file, on the data path under test.
    pub fn start() -> Self {
        require_root();
        let name = unique("v");
        let dir = std::env::temp_dir().join("iqd-tests");
        fs::create_dir_all(&dir).expect("temp dir");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("port").port()
        };
        let mut served = Self {
            config: dir.join(format!("{name}.toml")),
            token_file: dir.join(format!("{name}.token")),
            name,
            port,
            child: None,
        };
        served.spawn();
        served
    }

    fn spawn(&mut self) {
        let datapath = test_datapath().unwrap_or_else(|| "tc".into());
        let child = Command::new(iqd_bin())
            .args(["serve", "--config"])
            .arg(&self.config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--token-file")
            .arg(&self.token_file)
            .args(["--datapath", &datapath])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start iqd serve");
        self.child = Some(child);
        let port = self.port;
        wait_until(Duration::from_secs(60), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .expect("iqd serve listens");
    }

    pub fn token(&self) -> String {
        fs::read_to_string(&self.token_file)
            .expect("token file")
            .trim()
            .to_string()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Kills the server as a crash would (SIGKILL), then starts it again on the same files.
    pub fn crash_and_restart(&mut self) {
        self.kill(libc::SIGKILL);
        self.spawn();
    }

    fn kill(&mut self, signal: i32) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the pid of the child we started.
            unsafe { libc::kill(child.id() as i32, signal) };
            let _ = child.wait();
        }
    }

    /// `python tests/vpc/vpc.py ARGS` against this server; its JSON output (the step must exit 0).
    pub fn py(&self, args: &[&str]) -> serde_json::Value {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("vpc/vpc.py");
        let out = Command::new(python())
            .arg(script)
            .args(args)
            .env("IQD_VPC_URL", self.url())
            .env("IQD_VPC_TOKEN", self.token())
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "vpc.py {args:?} failed: {}",
            text(&out)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("vpc.py {args:?}: not JSON ({e}): {}", text(&out)))
    }

    /// One raw HTTP request (`token` None: no Authorization header): status and JSON body.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let (status, body) = self.http_text(method, path, token, body);
        let json = Some(body.as_str())
            .filter(|b| !b.is_empty())
            .map(|b| serde_json::from_str(b).unwrap_or_else(|e| panic!("body {b:?}: {e}")))
            .unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// One raw HTTP request: status and body as text.
    pub fn http_text(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        if let Some(t) = token {
            request += &format!("Authorization: Bearer {t}\r\n");
        }
        let body = body.unwrap_or("");
        request += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let status: u16 = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    pub fn config_arg(&self) -> &str {
        self.config.to_str().expect("utf-8 path")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill(libc::SIGTERM);
        if self.config.exists() {
            let out = iqd(&["down", "--config", self.config_arg()]);
            if !out.status.success() {
                eprintln!("cleanup: iqd down failed: {}", text(&out));
            }
        }
        let base = self.config.to_string_lossy().to_string();
        for file in [
            base.clone(),
            format!("{base}.db"),
            format!("{base}.db-wal"),
            format!("{base}.db-shm"),
        ] {
            let _ = fs::remove_file(file);
        }
        let _ = fs::remove_file(&self.token_file);
    }
}
