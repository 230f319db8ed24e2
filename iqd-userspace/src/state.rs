//! What `iqd up` created, so that `iqd down` removes exactly that (and leaves adopted
//! namespaces alone), even if the fabric file changed in between, and the configuration it
//! last applied, so that a failed `up` can return to it. Kept in /run: it lives and dies with
//! the namespaces and pins it describes.
//!
//! Written atomically (temporary file, fsync, rename, fsync of the directory) under the
//! fabric's lock, and before each namespace is created, so that a writer killed at any point
//! leaves a file the next `up` or `down` can finish from.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const STATE_ROOT: &str = "/run/iqd";

/// The state file's schema, written into every file. A file without one was written before
/// schemas (and reads as 0); a newer one than this iqd knows is refused, not misread.
pub const SCHEMA: u32 = 1;

/// The iqd that writes a state file, recorded in it (`written_by`) so that an older iqd's
/// refusal can name it.
pub fn writer() -> String {
    format!("iqd {}", env!("CARGO_PKG_VERSION"))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub schema: u32,
    /// The iqd that wrote the file (`iqd 0.1.0`); absent in files from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_by: Option<String>,
    pub fabric: String,
    /// LPAR namespaces iqd created (and will delete); others were adopted.
    pub created_netns: Vec<String>,
    pub nics: Vec<NicRecord>,
    /// The fabric file text of the last `up` that completed, and where it was read from: what
    /// a failed `up` rolls back to.
    #[serde(default)]
    pub applied: Option<AppliedFile>,
    /// The state of every LPAR the fabric has, by name (`iqd lpar stop`/`start`); absent in
    /// files from before lifecycles, whose LPARs all run.
    #[serde(default)]
    pub lpars: BTreeMap<String, LparState>,
}

/// An LPAR's lifecycle state, as a cloud server's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LparState {
    /// Its NICs carry frames. A new LPAR comes up running.
    #[default]
    Running,
    /// Its NICs are down (no carrier), frames to it are dropped (`lpar_stopped`); its NICs may
    /// be added and removed.
    Stopped,
}

impl LparState {
    pub fn label(self) -> &'static str {
        match self {
            LparState::Running => "running",
            LparState::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for LparState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedFile {
    pub path: PathBuf,
    pub text: String,
}

/// One NIC as it was built: enough to recognise it and to take it down.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicRecord {
    pub lpar: String,
    pub netns: String,
    pub nic: String,
    /// Fabric-side port name, in the fabric namespace.
    pub port: String,
    pub chpid: u8,
    /// The NIC's VLAN in its CHPID; absent: untagged (and in state files of iqd before VLANs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    pub devno: u16,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub ipv4: Vec<String>,
    /// Absent in state files of iqd before IPv6.
    #[serde(default)]
    pub ipv6: Vec<String>,
}

pub fn dir(fabric: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(fabric)
}

fn file(fabric: &str) -> PathBuf {
    dir(fabric).join("state.json")
}

impl State {
    pub fn load(fabric: &str) -> Result<Option<State>> {
        let path = file(fabric);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        Self::parse(&text, &path).map(Some)
    }

    fn parse(text: &str, path: &Path) -> Result<State> {
        /// The versioning fields alone: a newer schema is refused before the rest is read (its
        /// fields may not parse as this iqd's).
        #[derive(Deserialize)]
        struct Header {
            #[serde(default)]
            schema: u32,
            #[serde(default)]
            written_by: Option<String>,
        }
        let error = |e: serde_json::Error| Error::State {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let header: Header = serde_json::from_str(text).map_err(error)?;
        if header.schema > SCHEMA {
            return Err(Error::State {
                path: path.to_path_buf(),
                message: format!(
                    "written by a newer iqd ({}, schema {}; this iqd, {}, reads up to schema \
                     {SCHEMA}): use that iqd, or `iqd down` with it first",
                    header.written_by.as_deref().unwrap_or("version unknown"),
                    header.schema,
                    writer()
                ),
            });
        }
        serde_json::from_str(text).map_err(error)
    }

    /// Writes atomically: a crash mid-write leaves the previous state, never a torn file.
    pub fn save(&self) -> Result<()> {
        let dir = dir(&self.fabric);
        fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let path = file(&self.fabric);
        let state = State {
            schema: SCHEMA,
            written_by: Some(writer()),
            ..self.clone()
        };
        let text = serde_json::to_string_pretty(&state).map_err(|e| Error::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomically(&path, text.as_bytes())
    }

    /// The devnos the NICs were built with, for [`crate::config::Fabric::parse_keeping`].
    pub fn kept_devnos(&self) -> crate::config::KeptDevnos {
        self.nics
            .iter()
            .map(|n| ((n.lpar.clone(), n.nic.clone(), n.chpid), n.devno))
            .collect()
    }

    /// Whether the LPAR named `lpar` is stopped.
    pub fn is_stopped(&self, lpar: &str) -> bool {
        self.lpars.get(lpar) == Some(&LparState::Stopped)
    }

    /// Whether the fabric has (built) the LPAR named `lpar`: recorded, or, in files from
    /// before lifecycles, with a NIC recorded.
    pub fn has_lpar(&self, lpar: &str) -> bool {
        self.lpars.contains_key(lpar) || self.nics.iter().any(|n| n.lpar == lpar)
    }

    /// Records a namespace as iqd's before iqd creates it: killed right after creating it, iqd
    /// must still know it is its own to delete, not one to adopt.
    pub fn will_create_netns(&mut self, name: &str) -> Result<()> {
        if !self.created_netns.iter().any(|n| n == name) {
            self.created_netns.push(name.to_string());
            self.save()?;
        }
        Ok(())
    }

    pub fn remove(fabric: &str) -> Result<()> {
        match fs::remove_dir_all(dir(fabric)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", dir(fabric), e)),
        }
    }
}

/// Temporary file, fsync, rename over `path`, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("write", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    if let Some(dir) = path.parent() {
        // The rename itself is durable once the directory is.
        if let Ok(dir) = fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_without_a_schema_are_read_and_newer_schemas_refused() {
        let path = Path::new("/run/iqd/demo/state.json");
        let legacy = r#"{"fabric":"demo","created_netns":["lp01"],"nics":[]}"#;
        let state = State::parse(legacy, path).unwrap();
        assert_eq!(state.schema, 0);
        assert_eq!(state.created_netns, ["lp01"]);
        assert_eq!(state.applied, None);

        assert_eq!(state.written_by, None);

        // A newer schema is refused before its fields are read: they may be another shape.
        let newer = r#"{"schema":99,"written_by":"iqd 9.9.9","fabric":"demo","nics":{}}"#;
        let err = State::parse(newer, path).unwrap_err().to_string();
        assert!(err.contains("/run/iqd/demo/state.json"), "{err}");
        assert!(err.contains("newer iqd (iqd 9.9.9, schema 99"), "{err}");
        assert!(err.contains(&writer()), "{err}");
        let unnamed = r#"{"schema":2,"fabric":"demo","created_netns":[],"nics":[]}"#;
        let err = State::parse(unnamed, path).unwrap_err().to_string();
        assert!(
            err.contains("newer iqd (version unknown, schema 2"),
            "{err}"
        );
    }

    #[test]
    fn the_file_names_its_schema_and_writer() {
        let state = State {
            fabric: "demo".into(),
            ..Default::default()
        };
        let written = serde_json::to_value(State {
            schema: SCHEMA,
            written_by: Some(writer()),
            ..state
        })
        .unwrap();
        assert_eq!(written["schema"], SCHEMA);
        assert_eq!(written["written_by"], writer());
        let back = State::parse(&written.to_string(), Path::new("state.json")).unwrap();
        assert_eq!(back.written_by, Some(writer()));
    }

    #[test]
    fn atomic_writes_replace_the_whole_file_and_leave_no_temporary() {
        let dir = std::env::temp_dir().join(format!("iqd-state-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        write_atomically(&path, b"first, and longer").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "second");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
        let _ = fs::remove_dir_all(dir);
    }
}
