//! What the panels' own tests share: a session over a temporary folder, with or without a loaded
//! model, and a harness that lays out one panel and keeps the commands it pushed.

use egui_kittest::Harness;

use super::command::{Commands, UiCommand};
use super::state::{AppState, ModelStatus, Settings};
use crate::paths::Paths;
use crate::worker::{ModelInfo, PreviewKind};

/// A fresh session in a temporary folder (kept alive by the returned guard).
pub fn session() -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = AppState::new(Settings::default(), Paths::under(dir.path().to_path_buf()));
    (dir, state)
}

/// A session whose tiny model is loaded.
pub fn session_with_model() -> (tempfile::TempDir, AppState) {
    let (dir, mut state) = session();
    state.model = ModelStatus::Ready(ModelInfo {
        source: "tiny".into(),
        name: "tiny".into(),
        family: crate::engine::Family::Sd1,
        inpainting: false,
        device: "cpu".into(),
        precision: crate::engine::device::Precision::F32,
        load_secs: 0.1,
        preview: PreviewKind::Approximate,
    });
    (dir, state)
}

/// One panel under test: the session, the panel's view state and the commands pushed so far.
pub struct PanelState<S, V> {
    /// The session the panel shows.
    pub state: S,
    /// The panel's own view state.
    pub view: V,
    /// What it asked for.
    pub out: Commands,
}

/// A harness laying out `panel` over `state` and `view`.
pub fn harness<'a, S: 'a, V: 'a>(
    state: S,
    view: V,
    mut panel: impl FnMut(&mut egui::Ui, &mut S, &mut V, &mut Commands) + 'a,
) -> Harness<'a, PanelState<S, V>> {
    Harness::builder().with_size([900.0, 700.0]).build_ui_state(
        move |ui, s: &mut PanelState<S, V>| panel(ui, &mut s.state, &mut s.view, &mut s.out),
        PanelState { state, view, out: Commands::default() },
    )
}

/// The commands pushed since the last call.
pub fn pushed<S, V>(h: &mut Harness<'_, PanelState<S, V>>) -> Vec<UiCommand> {
    h.state_mut().out.take()
}
