//! The crash-safe store of `iqd serve`: SQLite (bundled), one row holding the desired state as
//! JSON, replaced in one transaction per acknowledged change. WAL with `synchronous=FULL`: a
//! committed change survives a crash of the process and of the machine; readers in other
//! processes (`iqd export`) see the last commit while `iqd serve` writes.
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension as _};

use super::model::Doc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store {path}: the saved state cannot be read: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub struct Store {
    path: PathBuf,
    conn: Connection,
}

/// Where the store of the fabric file `config` lives: beside it, `<config>.db`.
pub fn path_for(config: &Path) -> PathBuf {
    let mut name = config.as_os_str().to_owned();
    name.push(".db");
    PathBuf::from(name)
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute(
            "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            [],
        )
        .map_err(err)?;
        Ok(Store {
            path: path.to_path_buf(),
            conn,
        })
    }

    /// The last committed state (empty for a new store).
    pub fn load(&self) -> Result<Doc, StoreError> {
        let text: Option<String> = self
            .conn
            .query_row("SELECT value FROM state WHERE key = 'doc'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|source| StoreError::Sqlite {
                path: self.path.clone(),
                source,
            })?;
        match text {
            None => Ok(Doc::default()),
            Some(text) => serde_json::from_str(&text).map_err(|source| StoreError::Corrupt {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Replaces the state; durable when it returns.
    pub fn commit(&mut self, doc: &Doc) -> Result<(), StoreError> {
        let err = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let text = serde_json::to_string(doc).expect("the state serializes");
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute(
            "INSERT INTO state (key, value) VALUES ('doc', ?1) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [&text],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_is_read_back_by_another_connection() {
        let dir = std::env::temp_dir().join(format!("iqd-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.toml.db");
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.load().unwrap(), Doc::default());
        let mut doc = Doc::default();
        doc.new_id(1);
        store.commit(&doc).unwrap();
        let other = Store::open(&path).unwrap();
        assert_eq!(other.load().unwrap().next_id, 1);
        drop((store, other));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
