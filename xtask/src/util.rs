//! Helpers shared by the subcommands: echoed commands, tool lookup, workspace paths.

use std::{
    env,
    ffi::{OsStr, OsString},
    fmt::Write as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
};

use anyhow::{anyhow, bail, Context as _, Result};

/// The workspace root: xtask lives in `<root>/xtask`.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// `$CARGO_HOME/bin` (default `~/.cargo/bin`), where rustup and `cargo install` put tools.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))?;
    Some(home.join("bin"))
}

/// Appends `$CARGO_HOME/bin` to PATH for every child: under `sudo` the secure PATH usually lacks
/// it, yet aya-build needs `rustup` and rustc needs `bpf-linker` by name.
pub fn extend_path() {
    let Some(bin) = cargo_bin_dir().filter(|dir| dir.is_dir()) else {
        return;
    };
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&path).collect();
    if dirs.contains(&bin) {
        return;
    }
    dirs.push(bin);
    if let Ok(path) = env::join_paths(dirs) {
        // Runs first thing in main, before any other thread exists.
        env::set_var("PATH", path);
    }
}

/// The executable `name` as found on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A `cargo` command run in the workspace root. Prefers the rustup proxy on PATH so that
/// toolchain overrides keep working; falls back to the cargo that launched us.
pub fn cargo() -> Cmd {
    let program = match which("cargo") {
        Some(_) => OsString::from("cargo"),
        None => env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
    };
    // A stray AYA_BUILD_SKIP would yield an iqd without its data plane.
    Cmd::new(program)
        .current_dir(workspace_root())
        .env_remove("AYA_BUILD_SKIP")
}

/// Cargo's target directory (honours CARGO_TARGET_DIR and `build.target-dir`).
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    let from_metadata = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .quiet()
        .stdout_string()
        .ok()
        .and_then(|json| serde_json::from_str::<serde_json::Value>(&json).ok())
        .and_then(|meta| meta["target_directory"].as_str().map(PathBuf::from));
    from_metadata
        .or_else(|| env::var_os("CARGO_TARGET_DIR").map(|dir| root.join(dir)))
        .unwrap_or_else(|| root.join("target"))
}

/// The debug `iqd` binary that `cargo xtask build` produces.
pub fn iqd_bin() -> PathBuf {
    target_dir().join("debug").join("iqd")
}

/// A `std::process::Command` that echoes itself (`+ cmd args`) to stderr before it runs and
/// names itself in errors.
pub struct Cmd {
    command: Command,
    display: String,
    env_display: String,
    quiet: bool,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref();
        Self {
            command: Command::new(program),
            display: quote(program),
            env_display: String::new(),
            quiet: false,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        let arg = arg.as_ref();
        self.command.arg(arg);
        self.display.push(' ');
        self.display.push_str(&quote(arg));
        self
    }

    pub fn args<I, S>(self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        args.into_iter().fold(self, Self::arg)
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        let value = value.as_ref();
        self.command.env(key, value);
        let _ = write!(self.env_display, "{key}={} ", quote(value));
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.command.current_dir(dir);
        self
    }

    pub fn stdout(mut self, stdout: Stdio) -> Self {
        self.command.stdout(stdout);
        self
    }

    pub fn stderr(mut self, stderr: Stdio) -> Self {
        self.command.stderr(stderr);
        self
    }

    /// Don't echo (for probes and polling).
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// The command line as echoed, e.g. for error messages.
    pub fn display(&self) -> String {
        format!("{}{}", self.env_display, self.display)
    }

    fn echo(&self) {
        if !self.quiet {
            eprintln!("+ {}", self.display());
        }
    }

    /// Runs to completion with inherited stdio; a non-zero exit is an error.
    pub fn run(self) -> Result<()> {
        let display = self.display();
        let status = self.status()?;
        if !status.success() {
            bail!("`{display}` failed: {status}");
        }
        Ok(())
    }

    /// Runs to completion with inherited stdio; only failing to start is an error.
    pub fn status(mut self) -> Result<ExitStatus> {
        self.echo();
        self.command
            .status()
            .with_context(|| format!("could not start `{}`", self.display()))
    }

    /// Runs with stdout and stderr captured, whatever the exit status.
    pub fn output(mut self) -> Result<Output> {
        self.echo();
        self.command
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("could not start `{}`", self.display()))
    }

    /// Runs with stdout captured (stderr inherited); a non-zero exit is an error.
    pub fn stdout_string(mut self) -> Result<String> {
        self.echo();
        let display = self.display();
        let output = self
            .command
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("could not start `{display}`"))?;
        if !output.status.success() {
            bail!("`{display}` failed: {}", output.status);
        }
        String::from_utf8(output.stdout).map_err(|_| anyhow!("`{display}` printed non-UTF-8"))
    }

    pub fn spawn(mut self) -> Result<Child> {
        self.echo();
        self.command
            .spawn()
            .with_context(|| format!("could not start `{}`", self.display()))
    }

    /// Replaces this process (so exit status and signals pass straight through).
    pub fn exec(mut self) -> anyhow::Error {
        self.echo();
        let err = self.command.exec();
        anyhow!(err).context(format!("could not exec `{}`", self.display()))
    }
}

/// Quotes `arg` the way a POSIX shell would need it, for display only.
fn quote(arg: &OsStr) -> String {
    let arg = arg.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.into_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(quote("--package".as_ref()), "--package");
        assert_eq!(quote("".as_ref()), "''");
        assert_eq!(quote("a b".as_ref()), "'a b'");
        assert_eq!(quote("it's".as_ref()), r"'it'\''s'");
    }
}
