//! Composes a labelled comparison grid into one picture: a header row of column labels, a label
//! column on the left, cells in order. Text is rasterised with egui's own UI font (ab_glyph), so
//! the exported grid reads like the window.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use image::{Rgb, RgbImage};

const LABEL_PX: f32 = 22.0;
const PAD: u32 = 8;
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);

/// Pictures `cells[row][col]` (all the same size) with `rows` and `cols` labels.
pub fn compose(rows: &[String], cols: &[String], cells: &[Vec<RgbImage>]) -> RgbImage {
    let (cw, ch) = cells.first().and_then(|r| r.first()).map_or((64, 64), |c| c.dimensions());
    let font = FontRef::try_from_slice(epaint_default_fonts::UBUNTU_LIGHT).ok();
    let label_w = rows.iter().map(|r| text_width(font.as_ref(), r)).max().unwrap_or(0) + 2 * PAD;
    let header_h = LABEL_PX as u32 + 2 * PAD;
    let width = label_w + cols.len() as u32 * (cw + PAD) + PAD;
    let height = header_h + rows.len() as u32 * (ch + PAD) + PAD;
    let mut out = RgbImage::from_pixel(width, height, BACKGROUND);
    for (c, label) in cols.iter().enumerate() {
        let x = label_w + c as u32 * (cw + PAD);
        draw_text(&mut out, font.as_ref(), label, x, PAD);
    }
    for (r, label) in rows.iter().enumerate() {
        let y = header_h + r as u32 * (ch + PAD);
        draw_text(&mut out, font.as_ref(), label, PAD, y + ch / 2 - LABEL_PX as u32 / 2);
        for (c, cell) in cells.get(r).into_iter().flatten().enumerate() {
            let x = label_w + c as u32 * (cw + PAD);
            image::imageops::replace(&mut out, cell, i64::from(x), i64::from(y));
        }
    }
    out
}

fn text_width(font: Option<&FontRef>, text: &str) -> u32 {
    let Some(font) = font else { return 0 };
    let scaled = font.as_scaled(PxScale::from(LABEL_PX));
    text.chars().map(|c| scaled.h_advance(font.glyph_id(c))).sum::<f32>().ceil() as u32
}

fn draw_text(img: &mut RgbImage, font: Option<&FontRef>, text: &str, x: u32, y: u32) {
    let Some(font) = font else { return };
    let scaled = font.as_scaled(PxScale::from(LABEL_PX));
    let mut caret = x as f32;
    let baseline = y as f32 + scaled.ascent();
    for c in text.chars() {
        let id = font.glyph_id(c);
        let glyph = id.with_scale_and_position(PxScale::from(LABEL_PX), ab_glyph::point(caret, baseline));
        caret += scaled.h_advance(id);
        let Some(outlined) = font.outline_glyph(glyph) else { continue };
        let bounds = outlined.px_bounds();
        outlined.draw(|gx, gy, coverage| {
            let (px, py) = (bounds.min.x as i64 + i64::from(gx), bounds.min.y as i64 + i64::from(gy));
            if px < 0 || py < 0 || px >= i64::from(img.width()) || py >= i64::from(img.height()) {
                return;
            }
            let p = img.get_pixel_mut(px as u32, py as u32);
            for ch in &mut p.0 {
                *ch = (f32::from(*ch) * (1.0 - coverage)).round() as u8;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_cells_and_draws_labels() {
        let red = RgbImage::from_pixel(16, 16, Rgb([255, 0, 0]));
        let blue = RgbImage::from_pixel(16, 16, Rgb([0, 0, 255]));
        let out =
            compose(&["ink × 0".into(), "ink × 1".into()], &["seed 1".into()], &[vec![red], vec![blue]]);
        let label_w = out.width() - 16 - 2 * PAD;
        let header_h = LABEL_PX as u32 + 2 * PAD;
        assert_eq!(out.get_pixel(label_w + 3, header_h + 3), &Rgb([255, 0, 0]));
        assert_eq!(out.get_pixel(label_w + 3, header_h + 16 + PAD + 3), &Rgb([0, 0, 255]));
        // The labels put dark ink on the white margin.
        let dark = out.enumerate_pixels().filter(|(x, _, p)| *x < label_w && p.0[0] < 128).count();
        assert!(dark > 20, "{dark} dark label pixels");
    }
}
