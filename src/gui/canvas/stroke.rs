//! The geometry and compositing of one brush stroke: input points with pressure, the centripetal
//! Catmull–Rom curve through them, and how the stroke's coverage is laid over its layer.

use tiny_skia::{BlendMode, Path as SkPath, PathBuilder, Pixmap, PixmapPaint, Transform};

/// Distance, in canvas pixels, between the points sampled along a stroke's curve.
const SAMPLE_SPACING: f32 = 2.0;

/// Most points sampled along one curve segment (a jump across a huge canvas).
const MAX_SAMPLES: usize = 2048;

/// One input point of a stroke, in canvas pixels; `pressure` scales the brush width.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct StrokePoint {
    pub(super) x: f32,
    pub(super) y: f32,
    pub(super) pressure: f32,
}

impl StrokePoint {
    pub(super) fn distance(self, other: StrokePoint) -> f32 {
        (self.x - other.x).hypot(self.y - other.y)
    }

    /// `self` mirrored through `centre`: a stand-in neighbour at a stroke's open end.
    pub(super) fn mirrored_through(self, centre: StrokePoint) -> StrokePoint {
        StrokePoint { x: 2.0 * centre.x - self.x, y: 2.0 * centre.y - self.y, pressure: centre.pressure }
    }
}

/// How a stroke marks its layer, fixed when it starts.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ink {
    /// Paints the mask rather than the picture.
    pub(super) on_mask: bool,
    /// The colour at full strength.
    pub(super) color: tiny_skia::Color,
    /// How strongly the stroke's coverage is laid over the layer.
    pub(super) opacity: f32,
    pub(super) blend: BlendMode,
    /// Brush diameter at full pressure.
    pub(super) size: f32,
}

/// The stroke being drawn.
pub(super) struct ActiveStroke {
    pub(super) ink: Ink,
    /// The painted layer as it was before the stroke.
    pub(super) base: Pixmap,
    /// Everything the stroke has covered so far, at full strength. It is laid over `base` with
    /// the brush opacity, so a translucent stroke doesn't darken where its segments overlap.
    pub(super) coverage: Pixmap,
    /// The last (up to) three input points. The curve into the newest one is drawn only once
    /// the point after it is known, because Catmull–Rom needs a neighbour on each side.
    pub(super) recent: Vec<StrokePoint>,
}

/// The point at `t` (0–1) between `p[1]` and `p[2]` on the centripetal Catmull–Rom spline through
/// `p` (Barry–Goldman's pyramid). Centripetal knots keep the curve from looping or overshooting
/// where fast and slow pointer moves leave the points unevenly spaced.
pub(super) fn catmull_rom(p: [StrokePoint; 4], t: f32) -> (f32, f32) {
    let knot = |a: StrokePoint, b: StrokePoint| a.distance(b).sqrt().max(1e-3);
    let (t0, t1) = (0.0, knot(p[0], p[1]));
    let t2 = t1 + knot(p[1], p[2]);
    let t3 = t2 + knot(p[2], p[3]);
    let t = t1 + (t2 - t1) * t;
    let lerp = |a: (f32, f32), b: (f32, f32), ta: f32, tb: f32| {
        let w = (t - ta) / (tb - ta);
        (a.0 + (b.0 - a.0) * w, a.1 + (b.1 - a.1) * w)
    };
    let [q0, q1, q2, q3] = p.map(|q| (q.x, q.y));
    let a1 = lerp(q0, q1, t0, t1);
    let a2 = lerp(q1, q2, t1, t2);
    let a3 = lerp(q2, q3, t2, t3);
    let b1 = lerp(a1, a2, t0, t2);
    let b2 = lerp(a2, a3, t1, t3);
    lerp(b1, b2, t1, t2)
}

/// The curve from `p[1]` to `p[2]` as a polyline, sampled every couple of pixels.
pub(super) fn curve_path(p: [StrokePoint; 4]) -> Option<SkPath> {
    let steps = (p[1].distance(p[2]) / SAMPLE_SPACING).ceil().clamp(1.0, MAX_SAMPLES as f32) as usize;
    let mut pb = PathBuilder::new();
    pb.move_to(p[1].x, p[1].y);
    for i in 1..steps {
        let (x, y) = catmull_rom(p, i as f32 / steps as f32);
        pb.line_to(x, y);
    }
    pb.line_to(p[2].x, p[2].y);
    pb.finish()
}

/// Redraws `area` of `layer` as `base` with the stroke's `coverage` laid over it.
pub(super) fn composite(
    layer: &mut Pixmap,
    base: &Pixmap,
    coverage: &Pixmap,
    area: tiny_skia::Rect,
    ink: Ink,
) {
    let whole = tiny_skia::IntRect::from_xywh(0, 0, layer.width(), layer.height());
    let Some(area) = area.round_out().zip(whole).and_then(|(a, whole)| a.intersect(&whole)) else { return };
    let (Some(under), Some(over)) = (base.clone_rect(area), coverage.clone_rect(area)) else { return };
    let (x, y, id) = (area.x(), area.y(), Transform::identity());
    let restore = PixmapPaint { blend_mode: BlendMode::Source, ..PixmapPaint::default() };
    layer.draw_pixmap(x, y, under.as_ref(), &restore, id, None);
    let lay = PixmapPaint { opacity: ink.opacity, blend_mode: ink.blend, ..PixmapPaint::default() };
    layer.draw_pixmap(x, y, over.as_ref(), &lay, id, None);
}
