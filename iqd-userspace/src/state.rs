//! What `iqd up` created, so that `iqd down` removes exactly that (and leaves adopted
//! namespaces alone), even if the fabric file changed in between. Kept in /run: it lives and
//! dies with the namespaces and pins it describes.
//!
//! The file carries its schema version (`schema`) and the iqd that wrote it (`written_by`)
//! beside the state's own fields. A file without them is schema 0 (before versioning) and is
//! read as it is; a file of a newer schema than this iqd knows is refused rather than
//! misread.
use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const STATE_ROOT: &str = "/run/iqd";

/// The schema of the state file this iqd writes. Raise it when a field changes meaning or a
/// field a reader must not ignore is added; a reader refuses a newer schema than its own.
pub const SCHEMA: u32 = 1;

/// Who writes the file, named in the refusal an older iqd gives.
fn writer() -> String {
    format!("iqd {}", env!("CARGO_PKG_VERSION"))
}

/// The versioning fields of the file, read before the rest.
#[derive(Debug, Deserialize)]
struct Header {
    /// 0 for a file written before the schema was recorded.
    #[serde(default)]
    schema: u32,
    #[serde(default)]
    written_by: Option<String>,
}

/// The file as written: the versioning fields, then the state's own.
#[derive(Serialize)]
struct OnDisk<'a> {
    schema: u32,
    written_by: String,
    #[serde(flatten)]
    state: &'a State,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub fabric: String,
    /// LPAR namespaces iqd created (and will delete); others were adopted.
    pub created_netns: Vec<String>,
    pub nics: Vec<NicRecord>,
}

/// One NIC as it was built: enough to recognise it and to take it down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicRecord {
    pub lpar: String,
    pub netns: String,
    pub nic: String,
    /// Fabric-side port name, in the fabric namespace.
    pub port: String,
    pub chpid: u8,
    pub devno: u16,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub ipv4: Vec<String>,
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
        parse(&text, &path).map(Some)
    }

    /// Writes atomically: a crash mid-write leaves the previous state.
    pub fn save(&self) -> Result<()> {
        let dir = dir(&self.fabric);
        fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let path = file(&self.fabric);
        let tmp = path.with_extension("json.tmp");
        let on_disk = OnDisk {
            schema: SCHEMA,
            written_by: writer(),
            state: self,
        };
        let text = serde_json::to_string_pretty(&on_disk).map_err(|e| Error::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        fs::write(&tmp, text).map_err(|e| Error::io("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))
    }

    pub fn remove(fabric: &str) -> Result<()> {
        match fs::remove_dir_all(dir(fabric)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", dir(fabric), e)),
        }
    }
}

/// Reads a state file's text: any schema up to [`SCHEMA`] (0: before versioning), refusing a
/// newer one with the iqd that wrote it.
fn parse(text: &str, path: &Path) -> Result<State> {
    let error = |message: String| Error::State {
        path: path.to_path_buf(),
        message,
    };
    let header: Header = serde_json::from_str(text).map_err(|e| error(e.to_string()))?;
    if header.schema > SCHEMA {
        return Err(Error::StateSchema {
            path: path.to_path_buf(),
            schema: header.schema,
            known: SCHEMA,
            written_by: header
                .written_by
                .unwrap_or_else(|| "an unknown iqd".to_string()),
            this: writer(),
        });
    }
    serde_json::from_str(text).map_err(|e| error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            fabric: "demo".into(),
            created_netns: vec!["lp01".into()],
            nics: vec![NicRecord {
                lpar: "LP01".into(),
                netns: "lp01".into(),
                nic: "hsi0".into(),
                port: "p7000".into(),
                chpid: 0xf0,
                devno: 0x7000,
                mac: [2, 0, 0, 0xf0, 0x70, 0],
                mtu: 57344,
                ipv4: vec!["10.0.0.1/24".into()],
            }],
        }
    }

    fn written(state: &State) -> String {
        serde_json::to_string_pretty(&OnDisk {
            schema: SCHEMA,
            written_by: writer(),
            state,
        })
        .unwrap()
    }

    #[test]
    fn the_file_carries_its_schema_and_writer() {
        let text = written(&state());
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["schema"], SCHEMA);
        assert_eq!(json["written_by"], writer());
        assert_eq!(json["fabric"], "demo");
        let back = parse(&text, Path::new("state.json")).unwrap();
        assert_eq!(back.nics, state().nics);
        assert_eq!(back.created_netns, state().created_netns);
    }

    #[test]
    fn a_file_from_before_versioning_is_read_as_schema_0() {
        // What iqd wrote before the schema existed: the state alone.
        let legacy = serde_json::to_string(&state()).unwrap();
        assert!(!legacy.contains("schema"));
        let header: Header = serde_json::from_str(&legacy).unwrap();
        assert_eq!(header.schema, 0);
        let back = parse(&legacy, Path::new("state.json")).unwrap();
        assert_eq!(back.fabric, "demo");
        assert_eq!(back.nics, state().nics);
    }

    #[test]
    fn a_newer_schema_is_refused_naming_the_file_and_its_writer() {
        let mut json: serde_json::Value = serde_json::from_str(&written(&state())).unwrap();
        json["schema"] = (SCHEMA + 1).into();
        json["written_by"] = "iqd 9.9.9".into();
        let path = Path::new("/run/iqd/demo/state.json");
        let err = parse(&json.to_string(), path).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::StateSchema { .. }), "{message}");
        assert!(message.contains("/run/iqd/demo/state.json"), "{message}");
        assert!(message.contains("iqd 9.9.9"), "{message}");
        assert!(
            message.contains(&format!("schema {}", SCHEMA + 1)),
            "{message}"
        );
        // Without a writer recorded, the refusal still says what it can.
        json.as_object_mut().unwrap().remove("written_by");
        let message = parse(&json.to_string(), path).unwrap_err().to_string();
        assert!(message.contains("an unknown iqd"), "{message}");
    }

    #[test]
    fn a_malformed_file_names_itself() {
        let err = parse("{\"schema\": 1, \"fabric\": 3}", Path::new("/x/state.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/x/state.json"), "{err}");
    }
}
