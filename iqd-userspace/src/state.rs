//! What `iqd up` created, so that `iqd down` removes exactly that (and leaves adopted
//! namespaces alone), even if the fabric file changed in between. Kept in /run: it lives and
//! dies with the namespaces and pins it describes.
use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const STATE_ROOT: &str = "/run/iqd";

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
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::State {
                path,
                message: e.to_string(),
            })
    }

    /// Writes atomically: a crash mid-write leaves the previous state.
    pub fn save(&self) -> Result<()> {
        let dir = dir(&self.fabric);
        fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let path = file(&self.fabric);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::State {
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
