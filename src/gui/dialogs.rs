//! File dialogs behind a trait: the system's (rfd) in the app, a scripted list of answers in tests,
//! so every dialog-driven path (open a model, add a LoRA, export) runs under egui_kittest.
//! A dialog runs on a thread of its own ([`DialogRunner`]): a native dialog blocks the thread
//! that opens it, and on the window's thread it froze progress and previews while it was open.
//! Its answer comes back as the command the studio continues with.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::command::UiCommand;

/// The dialogs the studio opens.
pub trait Dialogs: Send + Sync {
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

/// What to ask a file dialog.
#[derive(Clone, Debug)]
pub enum Ask {
    /// An existing file with one of these extensions.
    File {
        /// The dialog's title.
        title: &'static str,
        /// Accepted extensions.
        extensions: &'static [&'static str],
    },
    /// A folder.
    Folder {
        /// The dialog's title.
        title: &'static str,
    },
    /// Where to save a new file.
    Save {
        /// The dialog's title.
        title: &'static str,
        /// The name offered.
        default_name: String,
    },
}

impl Ask {
    fn title(&self) -> &'static str {
        match self {
            Ask::File { title, .. } | Ask::Folder { title } | Ask::Save { title, .. } => title,
        }
    }

    fn run(&self, dialogs: &dyn Dialogs) -> Option<PathBuf> {
        match self {
            Ask::File { title, extensions } => dialogs.open_file(title, extensions),
            Ask::Folder { title } => dialogs.open_folder(title),
            Ask::Save { title, default_name } => dialogs.save_file(title, default_name),
        }
    }
}

/// An answer sooner than this is no person's: the system had no dialog to show.
const NO_DIALOG_WITHIN: Duration = Duration::from_millis(150);

/// The continuation of a dialog: what the studio does with the chosen path.
type Then = Box<dyn FnOnce(PathBuf) -> UiCommand + Send>;

/// What came back from a dialog thread.
pub enum Answer {
    /// A path was chosen: the command to continue with.
    Chosen(UiCommand),
    /// The dialog closed at once without a choice, as when the system has no file dialog: the
    /// studio asks for the path in a field of its own instead.
    Unavailable(PathRequest),
}

/// A path the studio asks for in its own window, where no file dialog could open.
pub struct PathRequest {
    /// What the dialog was for ("LoRA adapter").
    pub title: &'static str,
    /// The path typed so far (a save starts from the offered name).
    pub text: String,
    /// The field was given the keyboard once.
    pub focused: bool,
    then: Then,
}

impl PathRequest {
    /// The command the typed path continues with.
    pub fn finish(self) -> UiCommand {
        (self.then)(PathBuf::from(self.text.trim()))
    }
}

/// Runs one dialog at a time on its own thread and hands back what was chosen.
pub struct DialogRunner {
    dialogs: Arc<dyn Dialogs>,
    open: Arc<AtomicBool>,
    sender: Sender<Answer>,
    answers: Receiver<Answer>,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl DialogRunner {
    /// A runner over `dialogs`, calling `wake` when an answer arrives so the window redraws.
    pub fn new(dialogs: Arc<dyn Dialogs>, wake: Arc<dyn Fn() + Send + Sync>) -> Self {
        let (sender, answers) = channel();
        Self { dialogs, open: Arc::new(AtomicBool::new(false)), sender, answers, wake }
    }

    /// Whether a dialog is open now.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// Opens `ask` on a thread; the chosen path becomes `then(path)`. Refused (with the reason)
    /// while another dialog is open.
    pub fn ask(
        &self,
        ask: Ask,
        then: impl FnOnce(PathBuf) -> UiCommand + Send + 'static,
    ) -> Result<(), String> {
        let then: Then = Box::new(then);
        if self.open.swap(true, Ordering::SeqCst) {
            return Err("A file dialog is already open; finish it first.".into());
        }
        let (dialogs, open, sender, wake) =
            (Arc::clone(&self.dialogs), Arc::clone(&self.open), self.sender.clone(), Arc::clone(&self.wake));
        let spawned = std::thread::Builder::new().name("easel-dialog".into()).spawn(move || {
            let started = Instant::now();
            let answer = match ask.run(dialogs.as_ref()) {
                Some(path) => Answer::Chosen(then(path)),
                None if started.elapsed() < NO_DIALOG_WITHIN => {
                    let text = match &ask {
                        Ask::Save { default_name, .. } => default_name.clone(),
                        _ => String::new(),
                    };
                    Answer::Unavailable(PathRequest { title: ask.title(), text, then, focused: false })
                }
                // Cancelled by the artist: nothing to say.
                None => {
                    open.store(false, Ordering::SeqCst);
                    return;
                }
            };
            open.store(false, Ordering::SeqCst);
            // The window may have closed meanwhile; then nobody needs the answer.
            let _ = sender.send(answer);
            wake();
        });
        spawned.map(|_| ()).map_err(|e| {
            self.open.store(false, Ordering::SeqCst);
            format!("cannot open a file dialog ({e})")
        })
    }

    /// The answers that arrived since the last call.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers.try_iter().collect()
    }
}
