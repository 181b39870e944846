//! A1111's ControlNet extension's fields: `ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny
//! [d14c016b], Weight: 1.0, Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: 100.0,
//! Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: True, Control Mode:
//! Balanced"`, numbered over the enabled units, numbers printed as Python prints floats. Easel
//! makes maps at the generation's size, which A1111 calls pixel perfect. diffusers' guess mode has
//! no A1111 name: it is written as "ControlNet is more important", its nearest (Easel's own JSON
//! keeps it exactly).

use std::path::PathBuf;

use crate::engine::controlnet::{ControlMode, ControlSpec, Preprocessor, ResizeMode};
use crate::engine::GenerationRequest;

/// (name, A1111 hash) of each unit's ControlNet, in the request's order.
pub type ControlNames = [(String, Option<String>)];

/// Python's `str(float)` for the values A1111 writes: `1.0`, `0.8`, `100.0`.
fn py(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e16 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// The `ControlNet i` fields of `request`, values unquoted.
pub fn fields(request: &GenerationRequest, names: &ControlNames) -> Vec<(String, String)> {
    request
        .controls
        .iter()
        .enumerate()
        .map(|(i, unit)| {
            let (name, hash) = names.get(i).cloned().unwrap_or_default();
            let model = match hash {
                Some(h) => format!("{name} [{h}]"),
                None => name,
            };
            // A1111 writes hidden sliders at 0.5.
            let (a, b) = unit.preprocess.params();
            let mode = match unit.mode {
                ControlMode::Guess => ControlMode::Control,
                m => m,
            };
            let value = [
                ("Module", unit.preprocess.a1111_name().to_string()),
                ("Model", model.replace([',', ':'], " ")),
                ("Weight", py(unit.weight)),
                ("Resize Mode", unit.resize.a1111_name().to_string()),
                ("Processor Res", request.width.min(request.height).to_string()),
                ("Threshold A", py(a.unwrap_or(0.5))),
                ("Threshold B", py(b.unwrap_or(0.5))),
                ("Guidance Start", py(unit.start)),
                ("Guidance End", py(unit.end)),
                ("Pixel Perfect", "True".to_string()),
                ("Control Mode", mode.a1111_name().to_string()),
            ]
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ");
            (format!("ControlNet {i}"), value)
        })
        .collect()
}

/// The units in A1111 fields `ControlNet 0`, `ControlNet 1`…, in order. Models come back as the
/// names A1111 shows (`name [hash]`), found later in the ControlNet folder; control pictures are
/// never in a PNG. An unknown module (a preprocessor needing a model, such as depth) is read as
/// none: the picture given with the unit is then used as the map.
pub fn read(fields: &[(String, String)]) -> Vec<ControlSpec> {
    let mut units: Vec<(usize, ControlSpec)> = fields
        .iter()
        .filter_map(|(k, v)| {
            let index = k.strip_prefix("ControlNet ")?.trim().parse::<usize>().ok()?;
            Some((index, unit(v)))
        })
        .collect();
    units.sort_by_key(|(i, _)| *i);
    units.into_iter().map(|(_, u)| u).collect()
}

fn unit(value: &str) -> ControlSpec {
    let mut spec = ControlSpec::default();
    let (mut a, mut b) = (None, None);
    for part in value.split(", ") {
        let Some((key, v)) = part.split_once(": ") else { continue };
        let v = v.trim();
        let num = v.parse::<f64>().ok().filter(|x| x.is_finite());
        match key.trim() {
            "Module" => spec.preprocess = Preprocessor::named(v).unwrap_or_default(),
            "Model" => spec.model = PathBuf::from(v),
            "Weight" => spec.weight = num.unwrap_or(spec.weight),
            "Resize Mode" => spec.resize = ResizeMode::parse(v).unwrap_or_default(),
            "Threshold A" => a = num,
            "Threshold B" => b = num,
            "Guidance Start" => spec.start = num.unwrap_or(spec.start),
            "Guidance End" => spec.end = num.unwrap_or(spec.end),
            "Control Mode" => spec.mode = ControlMode::parse(v).unwrap_or_default(),
            _ => {}
        }
    }
    spec.preprocess = spec.preprocess.with_params(a, b);
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1111s_own_line_is_read() {
        let line = "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 0.8, Resize Mode: Just Resize, \
                    Processor Res: 512, Threshold A: 50.0, Threshold B: 150.0, Guidance Start: 0.1, Guidance End: 0.9, \
                    Pixel Perfect: False, Control Mode: My prompt is more important";
        let units = read(&[
            ("ControlNet 1".into(), "Module: none, Model: b, Weight: 1.0".into()),
            ("ControlNet 0".into(), line.into()),
        ]);
        assert_eq!(units.len(), 2);
        let u = &units[0];
        assert_eq!(u.model, PathBuf::from("control_v11p_sd15_canny [d14c016b]"));
        assert_eq!(u.preprocess, Preprocessor::Canny { low: 50.0, high: 150.0 });
        assert_eq!((u.weight, u.start, u.end), (0.8, 0.1, 0.9));
        assert_eq!((u.resize, u.mode), (ResizeMode::Just, ControlMode::Prompt));
        assert_eq!(units[1].model, PathBuf::from("b"));
    }

    #[test]
    fn written_units_read_back() {
        let request = GenerationRequest {
            controls: vec![ControlSpec {
                model: "x/cn.pth".into(),
                weight: 1.0,
                end: 0.75,
                preprocess: Preprocessor::Scribble { threshold: 40 },
                mode: ControlMode::Control,
                ..Default::default()
            }],
            ..Default::default()
        };
        let f = fields(&request, &[("cn".into(), Some("0123abcd".into()))]);
        assert_eq!(f[0].0, "ControlNet 0");
        assert!(
            f[0].1.starts_with(
                "Module: invert (from white bg & black line), Model: cn [0123abcd], Weight: 1.0, Resize Mode: Crop and Resize"
            ),
            "{}",
            f[0].1
        );
        assert!(f[0]
            .1
            .contains("Guidance End: 0.75, Pixel Perfect: True, Control Mode: ControlNet is more important"));
        let back = &read(&f)[0];
        assert_eq!(back.preprocess, Preprocessor::Invert, "A1111's nearest module");
        assert_eq!((back.end, back.mode), (0.75, ControlMode::Control));
    }
}
