//! GPU textures for pictures: uploaded once per picture (from the worker's pixels when they
//! arrive, or read from the gallery file a few per frame), magnified with nearest-neighbour so
//! high zoom shows exact pixels.

use std::collections::HashMap;

use egui::{ColorImage, Context, TextureHandle, TextureOptions};
use image::RgbImage;

use crate::history::History;

/// Picture files read from disk per frame at most, so opening a big gallery never stalls a frame.
const LOADS_PER_FRAME: usize = 2;

/// Textures by history id.
#[derive(Default)]
pub struct Textures {
    by_id: HashMap<u64, TextureHandle>,
    failed: std::collections::HashSet<u64>,
    loads_this_frame: usize,
    preview: Option<(u64, TextureHandle)>,
    thumbnails: HashMap<std::path::PathBuf, TextureHandle>,
}

/// Crisp when magnified, smooth when minified.
pub const PICTURE_OPTIONS: TextureOptions = TextureOptions {
    magnification: egui::TextureFilter::Nearest,
    minification: egui::TextureFilter::Linear,
    wrap_mode: egui::TextureWrapMode::ClampToEdge,
    mipmap_mode: None,
};

/// An egui image from RGB pixels.
pub fn color_image(image: &RgbImage) -> ColorImage {
    ColorImage::from_rgb([image.width() as usize, image.height() as usize], image.as_raw())
}

impl Textures {
    /// Call once per frame before drawing.
    pub fn begin_frame(&mut self) {
        self.loads_this_frame = 0;
    }

    /// Uploads pixels that just arrived.
    pub fn insert(&mut self, ctx: &Context, id: u64, image: &RgbImage) {
        let handle = ctx.load_texture(format!("picture-{id}"), color_image(image), PICTURE_OPTIONS);
        self.by_id.insert(id, handle);
    }

    /// The texture of a gallery picture, reading its file if needed (None while it waits its turn
    /// or when the file is unreadable).
    pub fn get(&mut self, ctx: &Context, history: &History, id: u64) -> Option<TextureHandle> {
        if let Some(t) = self.by_id.get(&id) {
            return Some(t.clone());
        }
        if self.failed.contains(&id) || self.loads_this_frame >= LOADS_PER_FRAME {
            if !self.failed.contains(&id) {
                ctx.request_repaint();
            }
            return None;
        }
        self.loads_this_frame += 1;
        let item = history.get(id)?;
        match image::open(&item.path) {
            Ok(img) => {
                self.insert(ctx, id, &img.to_rgb8());
                self.by_id.get(&id).cloned()
            }
            Err(_) => {
                self.failed.insert(id);
                None
            }
        }
    }

    /// Whether a gallery picture's file could not be read.
    pub fn failed(&self, id: u64) -> bool {
        self.failed.contains(&id)
    }

    /// An adapter's thumbnail, uploaded once.
    pub fn thumbnail(
        &mut self,
        ctx: &Context,
        path: &std::path::Path,
        image: &image::RgbaImage,
    ) -> TextureHandle {
        self.thumbnails
            .entry(path.to_path_buf())
            .or_insert_with(|| {
                let size = [image.width() as usize, image.height() as usize];
                ctx.load_texture(
                    format!("lora-thumb-{}", path.display()),
                    ColorImage::from_rgba_unmultiplied(size, image.as_raw()),
                    TextureOptions::LINEAR,
                )
            })
            .clone()
    }

    /// The live preview's texture, re-uploaded when `version` changes.
    pub fn preview(&mut self, ctx: &Context, image: &RgbImage, version: u64) -> TextureHandle {
        match &mut self.preview {
            Some((v, handle)) if *v == version => handle.clone(),
            Some((v, handle)) => {
                handle.set(color_image(image), TextureOptions::LINEAR);
                *v = version;
                handle.clone()
            }
            None => {
                let handle = ctx.load_texture("preview", color_image(image), TextureOptions::LINEAR);
                self.preview = Some((version, handle.clone()));
                handle
            }
        }
    }
}
