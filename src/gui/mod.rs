//! The studio: an egui/eframe window over the background worker. Panels read `AppState` and send
//! worker commands; they never call candle. Everything the window does can be driven by
//! egui_kittest through AccessKit (see `tests/gui.rs`).

mod app;
pub mod canvas;
mod compare;
mod controls;
pub mod dialogs;
mod gallery;
mod grid_image;
mod history_saver;
pub mod image_view;
mod lora_panel;
mod metrics_view;
pub mod state;
mod textures;

pub use app::{EaselApp, LaunchOptions};
pub use canvas::Canvas;

/// Opens the studio window and runs until it is closed.
pub fn run(options: LaunchOptions) -> anyhow::Result<()> {
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Easel")
            .with_inner_size([1360.0, 860.0])
            .with_min_inner_size([900.0, 600.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    eframe::run_native("easel", native, Box::new(move |cc| Ok(Box::new(EaselApp::new(cc, options)))))
        .map_err(|e| anyhow::anyhow!("the window could not open: {e}"))
}
