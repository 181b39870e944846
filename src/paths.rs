//! Where Easel keeps the user's things: presets and settings in the config folder, the gallery and
//! its history in the data folder. One `Paths` value is passed around so tests (and portable
//! installs) point everything at a folder of their own.

use std::path::PathBuf;

/// The folders Easel reads and writes.
#[derive(Clone, Debug)]
pub struct Paths {
    /// Presets and other small settings files.
    pub config: PathBuf,
    /// Gallery pictures, the history index and canvas inputs.
    pub data: PathBuf,
}

impl Paths {
    /// The platform's folders (`~/.config/easel`, `~/.local/share/easel` on Linux), or
    /// `./easel-data` when the system names none; `EASEL_HOME` puts both under one folder.
    pub fn from_system() -> Self {
        if let Some(home) = std::env::var_os("EASEL_HOME") {
            return Self::under(PathBuf::from(home));
        }
        match directories::ProjectDirs::from("", "", "easel") {
            Some(dirs) => {
                Self { config: dirs.config_dir().to_path_buf(), data: dirs.data_dir().to_path_buf() }
            }
            None => Self::under(PathBuf::from("easel-data")),
        }
    }

    /// Both folders inside `root`.
    pub fn under(root: PathBuf) -> Self {
        Self { config: root.join("config"), data: root.join("data") }
    }

    /// The user's presets.
    pub fn presets(&self) -> PathBuf {
        self.config.join("presets")
    }

    /// Finished pictures, one PNG each, with their parameters inside.
    pub fn gallery(&self) -> PathBuf {
        self.data.join("gallery")
    }

    /// The index of the gallery (order, timings, what made each picture).
    pub fn history_file(&self) -> PathBuf {
        self.data.join("history.json")
    }

    /// Canvas sketches and masks used as generation inputs, kept so the history can point at them.
    pub fn inputs(&self) -> PathBuf {
        self.data.join("inputs")
    }

    /// Pictures generated for metrics comparisons.
    pub fn evaluations(&self) -> PathBuf {
        self.data.join("evaluations")
    }
}
