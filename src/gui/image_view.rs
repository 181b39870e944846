//! A zoomable, pannable picture view: scroll to zoom about the cursor, drag to pan, double-click
//! to fit. Two views can share one `ViewTransform` to move in step (side-by-side compare).

use egui::{Color32, Rect, Response, Sense, TextureHandle, Ui, Vec2};

/// Zoom and pan of a picture view; zoom 1 means "fit to the view".
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ViewTransform {
    /// Magnification relative to fit.
    pub zoom: f32,
    /// Offset of the picture's centre from the view's centre, in view points.
    pub pan: Vec2,
    /// View points per picture pixel at zoom 1, as last drawn (so zoom can be told in pixels).
    pub fit: f32,
}

impl Default for ViewTransform {
    fn default() -> Self {
        Self { zoom: 1.0, pan: Vec2::ZERO, fit: 1.0 }
    }
}

impl ViewTransform {
    /// The magnification in picture pixels: 100 % shows one pixel per point.
    pub fn pixel_percent(&self) -> f32 {
        self.zoom * self.fit * 100.0
    }

    /// One picture pixel per point, centred.
    pub fn actual_size(&mut self) {
        if self.fit > 0.0 {
            *self = Self { zoom: 1.0 / self.fit, pan: Vec2::ZERO, fit: self.fit };
        }
    }

    /// Where the picture lands in `view`.
    pub fn picture_rect(&self, view: Rect, picture: Vec2) -> Rect {
        let fit = (view.width() / picture.x).min(view.height() / picture.y);
        let size = picture * fit * self.zoom;
        Rect::from_center_size(view.center() + self.pan, size)
    }

    /// Applies this frame's scroll and drag over `response`.
    pub fn interact(&mut self, ui: &Ui, response: &Response) {
        if response.dragged() {
            self.pan += response.drag_delta();
        }
        self.interact_zoom(ui, response);
    }

    /// Applies this frame's scroll (zoom about the cursor) and double-click (fit) over
    /// `response`, leaving drags to the caller.
    pub fn interact_zoom(&mut self, ui: &Ui, response: &Response) {
        if response.double_clicked() {
            *self = Self::default();
        }
        if response.hovered() {
            let scroll = ui.input(|i| i.smooth_scroll_delta.y);
            if scroll != 0.0 {
                let factor = (scroll / 200.0).exp();
                let new_zoom = (self.zoom * factor).clamp(0.1, 64.0);
                // Keep the point under the cursor fixed while zooming.
                if let Some(cursor) = response.hover_pos() {
                    let from_centre = cursor - (response.rect.center() + self.pan);
                    self.pan -= from_centre * (new_zoom / self.zoom - 1.0);
                }
                self.zoom = new_zoom;
            }
        }
    }
}

/// Draws `texture` into the available space with `transform`; returns the response.
pub fn image_view_ui(
    ui: &mut Ui,
    texture: &TextureHandle,
    transform: &mut ViewTransform,
    label: &str,
) -> Response {
    let size = ui.available_size().max(Vec2::splat(64.0));
    let (rect, response) = ui.allocate_exact_size(size, Sense::click_and_drag());
    transform.interact(ui, &response);
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 0.0, Color32::from_gray(24));
    let size = texture.size_vec2();
    transform.fit = (rect.width() / size.x).min(rect.height() / size.y);
    let picture = transform.picture_rect(rect, size);
    painter.image(
        texture.id(),
        picture,
        Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
        Color32::WHITE,
    );
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, label));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_the_aspect_and_centres() {
        let view = Rect::from_min_size(egui::pos2(0.0, 0.0), Vec2::new(400.0, 200.0));
        let r = ViewTransform::default().picture_rect(view, Vec2::new(100.0, 100.0));
        assert_eq!(r, Rect::from_center_size(egui::pos2(200.0, 100.0), Vec2::splat(200.0)));
        let zoomed = ViewTransform { zoom: 2.0, pan: Vec2::new(10.0, 0.0), ..Default::default() }
            .picture_rect(view, Vec2::splat(100.0));
        assert_eq!(zoomed.width(), 400.0);
        assert_eq!(zoomed.center(), egui::pos2(210.0, 100.0));
    }
}
