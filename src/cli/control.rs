//! `--control model=PATH,image=PATH[,weight=W][,start=S][,end=E][,preprocess=P][,mode=M]
//! [,resize=R][,low=L][,high=H][,threshold=T][,factor=F][,save=PNG]`: one ControlNet unit per flag.
//! With `--settings-from`, the k-th flag fills in or overrides the picture's k-th unit (its
//! control picture is never in the PNG, so `image=` is usually what it adds).

use std::path::{Path, PathBuf};

use easel::engine::controlnet::{ControlMode, ControlSpec, Preprocessor, ResizeMode};
use easel::error::{Error, Setting};

/// One `--control` flag: the fields it sets, and where to save the unit's map.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ControlFlag {
    model: Option<PathBuf>,
    image: Option<PathBuf>,
    weight: Option<f64>,
    start: Option<f64>,
    end: Option<f64>,
    preprocess: Option<Preprocessor>,
    param_a: Option<f64>,
    param_b: Option<f64>,
    mode: Option<ControlMode>,
    resize: Option<ResizeMode>,
    /// Write the unit's control map here.
    pub save: Option<PathBuf>,
}

fn bad(flag: &str, message: String) -> Error {
    Error::setting(Setting::Control, format!("\"{flag}\": {message}"))
}

/// Parses one flag's `key=value` list.
pub fn parse_flag(flag: &str) -> Result<ControlFlag, Error> {
    let mut out = ControlFlag::default();
    for part in flag.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = part.split_once('=') else {
            return Err(bad(
                flag,
                format!("{part} is not key=value (e.g. model=cn.safetensors,image=sketch.png)"),
            ));
        };
        let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
        let number = |what: &str| -> Result<f64, Error> {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(flag, format!("{what} {value} is not a number")))
        };
        match key.as_str() {
            "model" => out.model = Some(PathBuf::from(value)),
            "image" => out.image = Some(PathBuf::from(value)),
            "weight" | "scale" => out.weight = Some(number("weight")?),
            "start" => out.start = Some(number("start")?),
            "end" => out.end = Some(number("end")?),
            "preprocess" | "preprocessor" | "module" => {
                out.preprocess = Some(Preprocessor::named(value).ok_or_else(|| {
                    bad(flag, format!("no preprocessor {value}; use none, canny, scribble, lineart, invert, tile or inpaint"))
                })?)
            }
            "low" | "threshold" | "factor" => out.param_a = Some(number(&key)?),
            "high" => out.param_b = Some(number("high")?),
            "mode" => {
                out.mode = Some(ControlMode::parse(value).ok_or_else(|| {
                    bad(flag, format!("no control mode {value}; use balanced, prompt, control or guess"))
                })?)
            }
            "resize" => {
                out.resize = Some(
                    ResizeMode::parse(value)
                        .ok_or_else(|| bad(flag, format!("no resize mode {value}; use just, crop or fill")))?,
                )
            }
            "save" => out.save = Some(PathBuf::from(value)),
            other => {
                return Err(bad(
                    flag,
                    format!(
                        "unknown key {other}; keys are model, image, weight, start, end, preprocess, mode, resize, \
                         low, high, threshold, factor and save"
                    ),
                ))
            }
        }
    }
    Ok(out)
}

impl ControlFlag {
    /// `base` (a picture's unit, or the defaults) with this flag's fields over it.
    pub fn over(&self, base: ControlSpec) -> ControlSpec {
        let preprocess = self.preprocess.unwrap_or(base.preprocess).with_params(self.param_a, self.param_b);
        ControlSpec {
            model: self.model.clone().unwrap_or(base.model),
            image: self.image.clone().or(base.image),
            weight: self.weight.unwrap_or(base.weight),
            start: self.start.unwrap_or(base.start),
            end: self.end.unwrap_or(base.end),
            preprocess,
            mode: self.mode.unwrap_or(base.mode),
            resize: self.resize.unwrap_or(base.resize),
        }
    }
}

/// The request's units: the imported ones with the flags over them in order, then the flags
/// beyond them.
pub fn units(imported: Vec<ControlSpec>, flags: &[ControlFlag]) -> Vec<ControlSpec> {
    let n = imported.len().max(flags.len());
    let mut imported = imported.into_iter();
    (0..n)
        .map(|i| {
            let base = imported.next().unwrap_or_default();
            match flags.get(i) {
                Some(flag) => flag.over(base),
                None => base,
            }
        })
        .collect()
}

/// Where named ControlNets are looked up: the flag, or models/controlnet.
pub fn dir(flag: Option<&Path>) -> PathBuf {
    flag.map_or_else(|| PathBuf::from(easel::engine::controlnet::prepare::DEFAULT_DIR), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_reads_every_key() {
        let f = parse_flag("model=cn.pth, image=s.png,weight=0.8,start=0.1,end=0.9,preprocess=canny,low=50,high=120,mode=guess,resize=fill,save=m.png")
            .expect("a good flag");
        let spec = f.over(ControlSpec::default());
        assert_eq!(spec.model, PathBuf::from("cn.pth"));
        assert_eq!(spec.image, Some(PathBuf::from("s.png")));
        assert_eq!((spec.weight, spec.start, spec.end), (0.8, 0.1, 0.9));
        assert_eq!(spec.preprocess, Preprocessor::Canny { low: 50.0, high: 120.0 });
        assert_eq!((spec.mode, spec.resize), (ControlMode::Guess, ResizeMode::Fill));
        assert_eq!(f.save, Some(PathBuf::from("m.png")));
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        let msg = |s: &str| parse_flag(s).expect_err("refused").to_string();
        assert!(msg("model").contains("is not key=value"));
        assert!(msg("weight=heavy").contains("weight heavy is not a number"));
        assert!(msg("preprocess=depth").contains("no preprocessor depth"));
        assert!(msg("colour=red").contains("unknown key colour"));
    }

    #[test]
    fn flags_fill_in_imported_units_in_order() {
        let imported = vec![ControlSpec { model: "a".into(), weight: 0.5, ..Default::default() }];
        let flags = vec![
            parse_flag("image=x.png").expect("valid"),
            parse_flag("model=b,image=y.png").expect("valid"),
        ];
        let units = units(imported, &flags);
        assert_eq!(units.len(), 2);
        assert_eq!((units[0].model.as_path(), units[0].weight), (Path::new("a"), 0.5));
        assert_eq!(units[0].image.as_deref(), Some(Path::new("x.png")));
        assert_eq!(units[1].model, PathBuf::from("b"));
    }
}
