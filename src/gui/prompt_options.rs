//! The "A1111 compatibility" controls: how emphasis weights act, clip skip, which generator draws
//! the noise (and A1111's ENSD), whose sampler implementation runs, and the textual-inversion
//! embeddings of the embeddings folder, each a button that adds its name to a prompt. Importing an
//! A1111 picture sets all of them the way the picture was made.

use std::path::{Path, PathBuf};

use egui::Ui;

use super::state::AppState;
use crate::engine::prompt::Emphasis;
use crate::engine::rng::NoiseSource;
use crate::engine::samplers::SamplerImpl;

/// The embedding files of the folder last looked at (names only: reading them waits for a run).
#[derive(Default)]
pub struct EmbeddingList {
    dir: String,
    names: Vec<String>,
}

impl EmbeddingList {
    /// The embedding names in `dir`, read again when the folder changes or `refresh` is set.
    pub fn names(&mut self, dir: &str, refresh: bool) -> &[String] {
        if refresh || self.dir != dir {
            self.dir = dir.to_string();
            self.names = list_embeddings(Path::new(dir));
        }
        &self.names
    }
}

/// File stems of the `.pt`, `.bin` and `.safetensors` files under `dir`, sorted, without repeats.
pub fn list_embeddings(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack: Vec<(PathBuf, usize)> = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && depth < 8 {
                stack.push((path, depth + 1));
            } else if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
                if ["pt", "bin", "safetensors"].contains(&ext.to_ascii_lowercase().as_str()) {
                    if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                        names.push(stem.to_string());
                    }
                }
            }
        }
    }
    names.sort_by_key(|n| n.to_lowercase());
    names.dedup();
    names
}

fn emphasis_hint(e: Emphasis) -> &'static str {
    match e {
        Emphasis::Original => {
            "A1111's default: (word:1.2) scales the word, then the prompt's mean is restored"
        }
        Emphasis::NoNorm => "Scale the words without restoring the mean (A1111: better for SDXL)",
        Emphasis::Ignore => "Read the brackets but weigh every word 1",
        Emphasis::None => "Brackets and BREAK are plain text",
        Emphasis::Comfy => "ComfyUI's weighting: (word:1.2) sets the weight, measured from the empty prompt",
    }
}

/// The section, folded by default (A1111's defaults suit most prompts).
pub fn prompt_options_ui(ui: &mut Ui, state: &mut AppState) {
    egui::CollapsingHeader::new("A1111 compatibility").id_salt("a1111-options").show(ui, |ui| {
        let (s, list) = (&mut state.settings, &mut state.embedding_names);
        egui::ComboBox::from_label("Emphasis")
            .selected_text(s.emphasis.a1111_name())
            .show_ui(ui, |ui| {
                for e in Emphasis::ALL {
                    ui.selectable_value(&mut s.emphasis, e, e.a1111_name()).on_hover_text(emphasis_hint(e));
                }
            })
            .response
            .on_hover_text(emphasis_hint(s.emphasis));
        ui.horizontal(|ui| {
            let label = ui.label("Clip skip");
            ui.add(egui::DragValue::new(&mut s.clip_skip).range(1..=crate::engine::request::MAX_CLIP_SKIP))
                .labelled_by(label.id)
                .on_hover_text("SD 1.x: 2 reads the text encoder's next-to-last layer (anime models); SD 2.x and SDXL ignore it, as in A1111");
        });
        ui.horizontal(|ui| {
            ui.label("Noise");
            ui.selectable_value(&mut s.rng, NoiseSource::Cpu, "CPU")
                .on_hover_text("PyTorch's CPU generator, as diffusers");
            ui.selectable_value(&mut s.rng, NoiseSource::Gpu, "GPU")
                .on_hover_text("The numbers an NVIDIA GPU draws for the seed (A1111's default), on any machine");
            let label = ui.label("ENSD");
            ui.add(egui::DragValue::new(&mut s.ensd).range(0..=u32::MAX as u64))
                .labelled_by(label.id)
                .on_hover_text("A1111's eta noise seed delta: ancestral samplers draw their step noise from seed + ENSD");
        });
        ui.horizontal(|ui| {
            ui.label("Samplers as");
            ui.selectable_value(&mut s.sampler_impl, SamplerImpl::Diffusers, "diffusers")
                .on_hover_text("diffusers' schedulers, configured by the model's scheduler config");
            ui.selectable_value(&mut s.sampler_impl, SamplerImpl::A1111, "A1111")
                .on_hover_text("A1111's samplers (k-diffusion's noise schedules): its pictures for its seeds");
        });
        ui.horizontal(|ui| {
            let label = ui.label("Embeddings");
            ui.add(egui::TextEdit::singleline(&mut s.embeddings_dir).desired_width(180.0)).labelled_by(label.id);
        });
        let refresh = ui.small_button("Look again").on_hover_text("Read the embeddings folder again").clicked();
        let names = list.names(&s.embeddings_dir, refresh).to_vec();
        if names.is_empty() {
            ui.weak("No embeddings (.pt, .bin, .safetensors) in this folder.");
            return;
        }
        ui.horizontal_wrapped(|ui| {
            for name in names {
                let button = ui
                    .add(egui::Button::new(&name).small())
                    .on_hover_text("Click: add to the prompt. Shift-click: add to the negative prompt");
                if button.clicked() {
                    let negative = ui.input(|i| i.modifiers.shift);
                    let target = if negative { &mut s.negative } else { &mut s.prompt };
                    if !target.trim().is_empty() {
                        target.push_str(", ");
                    }
                    target.push_str(&name);
                }
            }
        });
    });
}
