//! File dialogs behind a trait: the system's (rfd) in the app, a scripted list of answers in tests,
//! so every dialog-driven path (open a model, add a LoRA, export) runs under egui_kittest.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;

/// The dialogs the studio opens.
pub trait Dialogs: Send {
    /// Pick an existing file matching one of the extensions.
    fn open_file(&self, title: &str, extensions: &[&str]) -> Option<PathBuf>;
    /// Pick a folder.
    fn open_folder(&self, title: &str) -> Option<PathBuf>;
    /// Choose where to save a new file.
    fn save_file(&self, title: &str, default_name: &str) -> Option<PathBuf>;
}

/// The operating system's dialogs.
pub struct SystemDialogs;

impl Dialogs for SystemDialogs {
    fn open_file(&self, title: &str, extensions: &[&str]) -> Option<PathBuf> {
        rfd::FileDialog::new().set_title(title).add_filter(title, extensions).pick_file()
    }
    fn open_folder(&self, title: &str) -> Option<PathBuf> {
        rfd::FileDialog::new().set_title(title).pick_folder()
    }
    fn save_file(&self, title: &str, default_name: &str) -> Option<PathBuf> {
        rfd::FileDialog::new().set_title(title).set_file_name(default_name).save_file()
    }
}

/// Answers given in advance, in order (tests).
#[derive(Default)]
pub struct ScriptedDialogs {
    answers: Mutex<VecDeque<PathBuf>>,
}

impl ScriptedDialogs {
    /// Dialogs that answer with these paths, one per dialog, then cancel.
    pub fn new(answers: impl IntoIterator<Item = PathBuf>) -> Self {
        Self { answers: Mutex::new(answers.into_iter().collect()) }
    }

    /// Adds an answer for a later dialog.
    pub fn push(&self, answer: PathBuf) {
        if let Ok(mut a) = self.answers.lock() {
            a.push_back(answer);
        }
    }

    fn next(&self) -> Option<PathBuf> {
        self.answers.lock().ok()?.pop_front()
    }
}

impl Dialogs for ScriptedDialogs {
    fn open_file(&self, _: &str, _: &[&str]) -> Option<PathBuf> {
        self.next()
    }
    fn open_folder(&self, _: &str) -> Option<PathBuf> {
        self.next()
    }
    fn save_file(&self, _: &str, _: &str) -> Option<PathBuf> {
        self.next()
    }
}

impl<T: Dialogs + Sync> Dialogs for std::sync::Arc<T> {
    fn open_file(&self, title: &str, extensions: &[&str]) -> Option<PathBuf> {
        (**self).open_file(title, extensions)
    }
    fn open_folder(&self, title: &str) -> Option<PathBuf> {
        (**self).open_folder(title)
    }
    fn save_file(&self, title: &str, default_name: &str) -> Option<PathBuf> {
        (**self).save_file(title, default_name)
    }
}
