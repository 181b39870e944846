//! The studio: an egui/eframe window over the background worker. Panels show `AppState` and their
//! own view state, and push `UiCommand`s for anything beyond the frame; `run.rs` carries them out
//! and is the only code that talks to the worker or opens dialogs. Everything the window does can
//! be driven by egui_kittest through AccessKit (`tests/gui.rs`, and each panel's own tests).

mod app;
pub mod canvas;
pub mod command;
pub mod compare;
pub mod control_panel;
pub mod controls;
pub mod dialogs;
pub mod gallery;
mod grid_image;
mod history_saver;
pub mod image_view;
pub mod live;
pub mod lora_panel;
pub mod metrics_view;
pub mod prompt_options;
mod run;
pub mod settings;
pub mod state;
#[cfg(test)]
mod test_support;
pub mod textures;
pub mod token_count;

pub use app::{EaselApp, LaunchOptions, Panels};
pub use canvas::Canvas;
pub use command::UiCommand;

/// Opens the studio window and runs until it is closed.
pub fn run(options: LaunchOptions) -> anyhow::Result<()> {
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Easel")
            .with_inner_size([1360.0, 860.0])
            .with_min_inner_size([900.0, 600.0])
            .with_drag_and_drop(true),
        // With EASEL_HOME the window's own settings live there too, beside everything else.
        persistence_path: std::env::var_os("EASEL_HOME")
            .map(|_| crate::paths::Paths::from_system().config.join("app.ron")),
        ..Default::default()
    };
    eframe::run_native("easel", native, Box::new(move |cc| Ok(Box::new(EaselApp::new(cc, options)))))
        .map_err(|e| anyhow::anyhow!("the window could not open: {e}"))
}
