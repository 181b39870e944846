//! A1111's `parameters` text: the format every other tool reads to recover how a picture was made.
//!
//! ```text
//! castle on a hill
//! Negative prompt: blurry, lowres
//! Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1
//! ```
//! Values holding `,`, `:` or a newline are JSON-quoted.

use crate::engine::prompt::Emphasis;
use crate::engine::rng::NoiseSource;
use crate::engine::samplers::SamplerImpl;
use crate::engine::{GenerationRequest, SamplerKind};
use crate::error::{Error, Result};

/// A1111's model hash of a single-file checkpoint: the first 10 hex digits of its sha256.
pub fn model_hash(path: &std::path::Path) -> crate::Result<String> {
    let hash =
        crate::files::sha256_hex(path).map_err(|e| crate::Error::io("cannot read the model", e, path))?;
    Ok(hash[..10].to_string())
}

/// What the picture's metadata says beyond the request itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Provenance {
    /// The model's display name.
    pub model: String,
    /// First 10 hex digits of the model file's sha256, when known.
    pub model_hash: Option<String>,
    /// The program version.
    pub version: String,
    /// (name, A1111 hash) of each LoRA used.
    pub lora_hashes: Vec<(String, String)>,
    /// (file name, short hash) of the standalone VAE used, as A1111's `VAE` and `VAE hash`.
    pub vae: Option<(String, String)>,
    /// (name, short hash) of each textual-inversion embedding the prompts used (`TI hashes`).
    pub embeddings: Vec<(String, String)>,
    /// (name, A1111's old short hash) of each ControlNet unit's model, in the request's order.
    pub controls: Vec<(String, Option<String>)>,
}

/// The request as A1111 writes it, for the image made with `seed`.
pub fn to_a1111(request: &GenerationRequest, seed: u64, provenance: &Provenance) -> String {
    let (sampler, schedule) = request.sampler.a1111_names();
    let mut fields: Vec<(&str, String)> = vec![
        ("Steps", request.steps.to_string()),
        ("Sampler", sampler.to_string()),
        ("Schedule type", schedule.to_string()),
        ("CFG scale", number(request.cfg_scale)),
        ("Seed", seed.to_string()),
        ("Size", format!("{}x{}", request.width, request.height)),
    ];
    if let Some(hash) = &provenance.model_hash {
        fields.push(("Model hash", hash.clone()));
    }
    if !provenance.model.is_empty() {
        fields.push(("Model", provenance.model.clone()));
    }
    if let Some((name, hash)) = &provenance.vae {
        if !hash.is_empty() {
            fields.push(("VAE hash", hash.clone()));
        }
        fields.push(("VAE", name.clone()));
    }
    if request.init_image.is_some() {
        fields.push(("Denoising strength", number(request.strength)));
    }
    if request.clip_skip != 1 {
        fields.push(("Clip skip", request.clip_skip.to_string()));
    }
    if request.ensd != 0 {
        fields.push(("ENSD", request.ensd.to_string()));
    }
    // A1111 leaves out its default, the GPU generator.
    if request.rng == NoiseSource::Cpu {
        fields.push(("RNG", "CPU".to_string()));
    }
    if request.emphasis != Emphasis::Original {
        fields.push(("Emphasis", request.emphasis.a1111_name().to_string()));
    }
    if request.sampler_impl == SamplerImpl::A1111 {
        fields.push(("Sampler impl", request.sampler_impl.id().to_string()));
    }
    if !provenance.embeddings.is_empty() {
        let hashes: Vec<String> = provenance
            .embeddings
            .iter()
            .map(|(n, h)| format!("{}: {h}", n.replace([':', ','], "")))
            .collect();
        fields.push(("TI hashes", hashes.join(", ")));
    }
    if !provenance.lora_hashes.is_empty() {
        let hashes: Vec<String> = provenance.lora_hashes.iter().map(|(n, h)| format!("{n}: {h}")).collect();
        fields.push(("Lora hashes", hashes.join(", ")));
    }
    let controls = super::controlnet_text::fields(request, &provenance.controls);
    fields.extend(controls.iter().map(|(k, v)| (k.as_str(), v.clone())));
    fields.push(("Version", provenance.version.clone()));
    let line = fields.into_iter().map(|(k, v)| format!("{k}: {}", quote(&v))).collect::<Vec<_>>().join(", ");
    let mut text = request.prompt.clone();
    if !request.negative_prompt.is_empty() {
        text.push_str("\nNegative prompt: ");
        text.push_str(&request.negative_prompt);
    }
    text.push('\n');
    text.push_str(&line);
    text
}

/// A1111 parameters read back: the prompt, the negative prompt and the key–value fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedParameters {
    /// The prompt.
    pub prompt: String,
    /// The negative prompt.
    pub negative_prompt: String,
    /// Every `Key: value` field of the last line, unquoted.
    pub fields: Vec<(String, String)>,
}

impl ParsedParameters {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The generation request these parameters describe (fields Easel does not know are ignored).
    /// A known field whose value cannot be used (a seed past 2⁶⁴, a CFG of `nan`) is refused with a
    /// sentence naming it, rather than silently replaced by a default.
    pub fn to_request(&self) -> Result<GenerationRequest> {
        let mut req = GenerationRequest {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            ..Default::default()
        };
        if let Some(v) = self.field("Steps", "a whole number of steps")? {
            req.steps = v;
        }
        if let Some(kind) =
            self.get("Sampler").and_then(|s| SamplerKind::from_a1111(s, self.get("Schedule type")))
        {
            req.sampler = kind;
        }
        if let Some(v) = self.finite_field("CFG scale")? {
            req.cfg_scale = v;
        }
        if let Some(v) = self.field("Seed", "a whole number from 0 to 18446744073709551615")? {
            req.seed = v;
        }
        if let Some(size) = self.get("Size") {
            let parsed = size
                .split_once('x')
                .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)));
            let (w, h) = parsed.ok_or_else(|| unusable("Size", size, "width x height in pixels"))?;
            req.width = w;
            req.height = h;
        }
        if let Some(v) = self.finite_field("Denoising strength")? {
            req.strength = v;
        }
        if let Some(v) = self.field("Clip skip", "a whole number of layers")? {
            req.clip_skip = v;
        }
        if let Some(v) = self.field("ENSD", "a whole number")? {
            req.ensd = v;
        }
        // Pictures from A1111 (and Forge, SD.Next…) were drawn with A1111's samplers and, unless
        // the RNG field says otherwise, GPU noise; Easel's own text says what it used.
        let from_easel = self.get("Version").is_some_and(|v| v.starts_with("Easel"));
        req.sampler_impl = match self.get("Sampler impl") {
            Some(v) => v.parse().map_err(|_| unusable("Sampler impl", v, "a1111 or diffusers"))?,
            None if from_easel => SamplerImpl::Diffusers,
            None => SamplerImpl::A1111,
        };
        req.rng = match self.get("RNG") {
            Some(v) => NoiseSource::from_a1111(v).ok_or_else(|| unusable("RNG", v, "GPU, CPU or NV"))?,
            None => NoiseSource::Gpu,
        };
        if let Some(v) = self.get("Emphasis") {
            req.emphasis = Emphasis::from_a1111(v)
                .ok_or_else(|| unusable("Emphasis", v, "Original, No norm, Ignore or None"))?;
        }
        req.controls = super::controlnet_text::read(&self.fields);
        Ok(req)
    }

    /// A field parsed as `T`, or a sentence saying it is not `expected`.
    fn field<T: std::str::FromStr>(&self, key: &str, expected: &str) -> Result<Option<T>> {
        self.get(key).map(|v| v.trim().parse().map_err(|_| unusable(key, v, expected))).transpose()
    }

    /// A number field that must be finite.
    fn finite_field(&self, key: &str) -> Result<Option<f64>> {
        match self.field::<f64>(key, "a number")? {
            Some(v) if !v.is_finite() => Err(unusable(key, &v.to_string(), "a finite number")),
            other => Ok(other),
        }
    }
}

fn unusable(key: &str, value: &str, expected: &str) -> Error {
    let shown: String = value.chars().take(40).collect();
    Error::BadRequest(format!(
        "the picture's {key} field \"{shown}\" is not usable: Easel expects {expected}"
    ))
}

/// Parses A1111's `parameters` text.
pub fn parse_a1111(text: &str) -> ParsedParameters {
    let mut lines: Vec<&str> = text.trim_end().lines().collect();
    let mut fields = Vec::new();
    if let Some(last) = lines.last() {
        let parsed = parse_fields(last);
        if parsed.len() >= 3 {
            fields = parsed;
            lines.pop();
        }
    }
    let mut prompt = Vec::new();
    let mut negative = Vec::new();
    let mut in_negative = false;
    for line in lines {
        if let Some(rest) = line.strip_prefix("Negative prompt:") {
            in_negative = true;
            negative.push(rest.trim_start());
        } else if in_negative {
            negative.push(line);
        } else {
            prompt.push(line);
        }
    }
    ParsedParameters { prompt: prompt.join("\n"), negative_prompt: negative.join("\n"), fields }
}

fn parse_fields(line: &str) -> Vec<(String, String)> {
    static FIELD: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = FIELD.get_or_init(|| {
        regex::Regex::new(r#"\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)"#).expect("a valid pattern")
    });
    re.captures_iter(line)
        .map(|c| {
            let raw = c[2].trim().to_string();
            let value = if raw.starts_with('"') { serde_json::from_str(&raw).unwrap_or(raw) } else { raw };
            (c[1].to_string(), value)
        })
        .collect()
}

fn quote(value: &str) -> String {
    if value.contains([',', ':', '\n']) {
        serde_json::to_string(value).unwrap_or_else(|_| value.to_string())
    } else {
        value.to_string()
    }
}

/// Numbers as A1111 shows them: `7` rather than `7.0`, `7.5` as is.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provenance() -> Provenance {
        Provenance {
            model: "v1-5-pruned-emaonly".into(),
            model_hash: Some("6ce0161689".into()),
            version: "v1.10.1".into(),
            lora_hashes: vec![],
            vae: None,
            embeddings: vec![],
            controls: vec![],
        }
    }

    #[test]
    fn a_standalone_vae_is_written_as_a1111_does() {
        let req =
            GenerationRequest { prompt: "a cat".into(), width: 1024, height: 1024, ..Default::default() };
        let p =
            Provenance { vae: Some(("sdxl_vae.safetensors".into(), "235745af8d".into())), ..provenance() };
        let text = to_a1111(&req, 1, &p);
        assert!(
            text.contains("Model: v1-5-pruned-emaonly, VAE hash: 235745af8d, VAE: sdxl_vae.safetensors,"),
            "{text}"
        );
    }

    #[test]
    fn writes_a1111_text() {
        let req = GenerationRequest {
            prompt: "castle on a hill, <lora:inkStyle:0.8>".into(),
            negative_prompt: "blurry, lowres".into(),
            sampler: SamplerKind::DpmPp2mKarras,
            steps: 20,
            cfg_scale: 7.0,
            seed: 1234,
            width: 512,
            height: 768,
            ..Default::default()
        };
        assert_eq!(
            to_a1111(&req, 1234, &provenance()),
            "castle on a hill, <lora:inkStyle:0.8>\nNegative prompt: blurry, lowres\n\
             Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, \
             Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, RNG: CPU, Version: v1.10.1"
        );
    }

    #[test]
    fn reads_an_a1111_picture_as_a1111_made_it() {
        let text = "(masterpiece:1.2), 1girl, EasyNegative\nNegative prompt: lowres\n\
             Steps: 20, Sampler: DPM++ 2M, Schedule type: Automatic, CFG scale: 7, Seed: 5, Size: 512x512, \
             Clip skip: 2, ENSD: 31337, Emphasis: No norm, TI hashes: \"EasyNegative: c74b4e810b03\", Version: v1.10.1";
        let req = parse_a1111(text).to_request().expect("usable");
        assert_eq!(req.sampler, SamplerKind::DpmPp2mKarras, "1.10's automatic schedule for DPM++ 2M");
        assert_eq!((req.clip_skip, req.ensd), (2, 31337));
        assert_eq!(req.rng, NoiseSource::Gpu, "no RNG field is A1111's default, the GPU");
        assert_eq!(req.emphasis, Emphasis::NoNorm);
        assert_eq!(req.sampler_impl, SamplerImpl::A1111);
        let old =
            parse_a1111("a\nSteps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 5, Size: 512x512, RNG: NV");
        let old = old.to_request().expect("usable");
        assert_eq!(old.sampler, SamplerKind::DpmPp2m, "before 1.9 the plain name was the uniform schedule");
        assert_eq!(old.rng, NoiseSource::Gpu);
    }

    #[test]
    fn round_trips_to_the_same_request() {
        let req = GenerationRequest {
            prompt: "a: tricky, prompt\nover two lines".into(),
            negative_prompt: "bad".into(),
            sampler: SamplerKind::EulerA,
            steps: 31,
            cfg_scale: 7.5,
            seed: 987_654_321_012,
            width: 640,
            height: 384,
            ..Default::default()
        };
        let prov =
            Provenance { model: "my, model: v2".into(), version: "Easel 0.2.0".into(), ..provenance() };
        let parsed = parse_a1111(&to_a1111(&req, req.seed, &prov));
        assert_eq!(parsed.to_request().expect("usable"), req);
        assert_eq!(parsed.get("Model"), Some("my, model: v2"));
    }

    #[test]
    fn lora_hashes_are_written_as_a1111_does() {
        let req = GenerationRequest { prompt: "castle, <lora:inkStyle:0.8>".into(), ..Default::default() };
        let prov = Provenance {
            lora_hashes: vec![
                ("inkStyle".into(), "1a2b3c4d5e6f".into()),
                ("grain".into(), "abcdefabcdef".into()),
            ],
            ..provenance()
        };
        let text = to_a1111(&req, 1, &prov);
        assert!(
            text.contains(r#"Lora hashes: "inkStyle: 1a2b3c4d5e6f, grain: abcdefabcdef", Version"#),
            "{text}"
        );
        assert_eq!(
            parse_a1111(&text).get("Lora hashes"),
            Some("inkStyle: 1a2b3c4d5e6f, grain: abcdefabcdef")
        );
    }

    #[test]
    fn reads_old_style_sampler_names() {
        let text = "cat\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 512x512";
        assert_eq!(parse_a1111(text).to_request().expect("usable").sampler, SamplerKind::DpmPp2mKarras);
    }

    #[test]
    fn unusable_numbers_are_refused_by_name() {
        let text =
            "a fox\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 99999999999999999999999, Size: 512x512";
        let err = parse_a1111(text).to_request().expect_err("seed past 2^64").to_string();
        assert!(err.contains("Seed") && err.contains("99999999999999999999999"), "{err}");
        let text = "a fox\nSteps: 20, Sampler: Euler, CFG scale: nan, Seed: 1, Size: 512x512";
        let err = parse_a1111(text).to_request().expect_err("nan CFG").to_string();
        assert!(err.contains("CFG scale") && err.contains("finite"), "{err}");
        let text = "a fox\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: big";
        assert!(parse_a1111(text).to_request().is_err());
    }
}
