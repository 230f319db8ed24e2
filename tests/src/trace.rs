//! `iqd trace` as the suites run it: started on a fabric, stopped with SIGINT, its capture read
//! back with tshark.
use std::{
    io::Read as _,
    path::Path,
    process::{Child, Command, Stdio},
};

use crate::{iqd_bin, text, TestFabric};

/// A running `iqd trace`, killed by pid on drop if not stopped.
pub struct Trace(Child);

impl Trace {
    /// Starts `iqd trace` on `fabric` with `args` and waits until it traces (its first line on
    /// stderr); its stdout is piped.
    pub fn start(fabric: &TestFabric, args: &[&str]) -> Self {
        let mut child = Command::new(iqd_bin())
            .args(["trace", "--config", fabric.config_arg()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("iqd trace");
        let mut stderr = child.stderr.take().expect("stderr");
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stderr.read(&mut byte).map(|n| n == 1).unwrap_or(false) && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        // The rest of stderr (the summary) is read when it ends.
        child.stderr = Some(stderr);
        let trace = Trace(child);
        assert!(
            line.contains("tracing CHPID"),
            "iqd trace did not start: {line}"
        );
        trace
    }

    /// Stops the trace with SIGINT; returns (its stdout, its stderr).
    pub fn stop(mut self) -> (Vec<u8>, String) {
        // SAFETY: plain syscall on our own child's pid.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGINT) };
        let mut stdout = Vec::new();
        if let Some(mut out) = self.0.stdout.take() {
            out.read_to_end(&mut stdout).expect("trace stdout");
        }
        let mut stderr = String::new();
        if let Some(mut err) = self.0.stderr.take() {
            err.read_to_string(&mut stderr).expect("trace stderr");
        }
        let status = self.0.wait().expect("trace exit");
        assert!(status.success(), "iqd trace failed: {stderr}");
        (stdout, stderr)
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: plain syscall on our own unreaped child's pid.
            unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

/// `tshark -r FILE -T fields -e ...`: one Vec per frame.
pub fn tshark_fields(file: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec!["-r", file.to_str().expect("path"), "-T", "fields"];
    for f in fields {
        args.extend_from_slice(&["-e", f]);
    }
    let out = Command::new("tshark")
        .args(&args)
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("tshark (Debian package tshark; cargo xtask setup installs it)");
    assert!(out.status.success(), "tshark: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(String::from).collect())
        .collect()
}
