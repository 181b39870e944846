//! The "A1111 compatibility" controls: how emphasis weights act, clip skip, which generator draws
//! the noise (and A1111's ENSD), whose sampler implementation runs, and the textual-inversion
//! embeddings of the embeddings folder, each a button that adds its name to a prompt. Importing an
//! A1111 picture sets all of them the way the picture was made.

use std::path::Path;

use egui::Ui;

use super::state::AppState;
use crate::engine::embeddings::EmbeddingDb;
use crate::engine::prompt::Emphasis;
use crate::engine::rng::NoiseSource;
use crate::engine::samplers::SamplerImpl;
use crate::engine::tokenizer::{Tokenizer, EOS};

/// The embeddings of the folder last looked at, read with the bundled tokenizer (which also
/// counts the prompts' tokens).
#[derive(Default)]
pub struct EmbeddingList {
    dir: Option<String>,
    tokenizer: Option<Tokenizer>,
    db: EmbeddingDb,
    /// Bumped at every read, so counts made with the old embeddings are made again.
    generation: u64,
}

impl EmbeddingList {
    /// The embeddings of `dir`, read again when the folder changes or `refresh` is set.
    pub fn read(&mut self, dir: &str, refresh: bool) -> &EmbeddingDb {
        if refresh || self.dir.as_deref() != Some(dir) {
            self.dir = Some(dir.to_string());
            self.generation += 1;
            self.db = match self.tokenizer() {
                Some(tok) if Path::new(dir).is_dir() => EmbeddingDb::load(Path::new(dir), tok),
                _ => EmbeddingDb::empty(),
            };
        }
        &self.db
    }

    /// The bundled CLIP tokenizer, made the first time it is needed.
    pub fn tokenizer(&mut self) -> Option<&Tokenizer> {
        if self.tokenizer.is_none() {
            self.tokenizer = Tokenizer::bundled(EOS).ok();
        }
        self.tokenizer.as_ref()
    }

    /// How many times the folder has been read.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The tokenizer (once made) and the embeddings last read.
    pub fn parts(&self) -> (Option<&Tokenizer>, &EmbeddingDb) {
        (self.tokenizer.as_ref(), &self.db)
    }
}

fn emphasis_hint(e: Emphasis) -> &'static str {
    match e {
        Emphasis::Original => {
            "A1111's default: (word:1.2) scales the word, then the prompt's mean is restored"
        }
        Emphasis::NoNorm => "Scale the words without restoring the mean (A1111: better for SDXL)",
        Emphasis::Ignore => "Read the brackets, but give every word the weight 1",
        Emphasis::None => "Brackets and BREAK are plain text",
        Emphasis::Comfy => "ComfyUI's weighting: (word:1.2) sets the weight, measured from the empty prompt",
    }
}

/// The section, folded by default (A1111's defaults suit most prompts).
pub fn prompt_options_ui(ui: &mut Ui, state: &mut AppState) {
    let family = match &state.model {
        super::state::ModelStatus::Ready(info) => Some(info.family),
        _ => None,
    };
    let header = egui::CollapsingHeader::new("A1111 compatibility").id_salt("a1111-options").show(ui, |ui| {
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
            let label = ui.label("Clip skip").on_hover_text(CLIP_SKIP_HINT);
            ui.add(egui::DragValue::new(&mut s.clip_skip).range(1..=crate::engine::request::MAX_CLIP_SKIP))
                .labelled_by(label.id)
                .on_hover_text(CLIP_SKIP_HINT);
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
            ui.add(egui::TextEdit::singleline(&mut s.embeddings_dir).desired_width(180.0))
                .labelled_by(label.id)
                .on_hover_text("The folder of textual-inversion embeddings; a relative path is read from the folder Easel was started in");
        });
        let refresh = ui.small_button("Look again").on_hover_text("Read the embeddings folder again").clicked();
        let db = list.read(&s.embeddings_dir, refresh);
        let names: Vec<(String, String, bool)> = db
            .all()
            .iter()
            .map(|e| (e.name.clone(), format!("{} vectors, for {}", e.vectors(), e.made_for()), family.is_none_or(|f| e.fits(f))))
            .collect();
        for (name, why) in &db.skipped {
            ui.colored_label(ui.visuals().error_fg_color, format!("{name} cannot be used")).on_hover_text(why);
        }
        if names.is_empty() {
            if Path::new(&s.embeddings_dir).is_dir() {
                ui.weak("No embeddings (.pt, .bin, .safetensors) in this folder.");
            } else {
                ui.weak("This folder does not exist.");
            }
            return;
        }
        ui.horizontal_wrapped(|ui| {
            for (name, about, fits) in names {
                let button = ui
                    .add_enabled(fits, egui::Button::new(&name).small())
                    .on_hover_text(format!("{about}. Click: add to the prompt; shift-click: to the negative prompt"))
                    .on_disabled_hover_text(format!(
                        "{about}: it does not fit the loaded {} model",
                        family.map_or("", |f| f.label())
                    ));
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
    header.header_response.on_hover_text(
        "How A1111 and ComfyUI read prompts and draw noise, to remake their pictures; importing one sets these",
    );
}

const CLIP_SKIP_HINT: &str =
    "SD 1.x: 2 reads the text encoder's next-to-last layer (anime models); SD 2.x and SDXL keep their own layers, as in A1111";
