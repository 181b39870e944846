//! `<lora:name:weight>` tags in prompts, as A1111 writes them: the name, then the text-encoder
//! weight, then the UNet weight (which defaults to the first); `te=` / `unet=` may be named.

use regex::Regex;

/// The most adapter tags one prompt may hold (each is read and merged; thousands took minutes).
pub const MAX_TAGS: usize = 64;

/// One adapter a prompt asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptLora {
    /// The file name without extension.
    pub name: String,
    /// UNet weight.
    pub unet_weight: f64,
    /// Text-encoder weight.
    pub text_weight: f64,
}

fn tag_pattern() -> &'static Regex {
    static PATTERN: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| Regex::new(r"<(?:lora|lyco):([^>]+)>").expect("a valid pattern"))
}

/// The adapters a prompt's tags ask for, in order; a tag with an unreadable weight is an error.
pub fn parse_tags(prompt: &str) -> std::result::Result<Vec<PromptLora>, String> {
    let mut found = Vec::new();
    for cap in tag_pattern().captures_iter(prompt) {
        if found.len() == MAX_TAGS {
            return Err(format!(
                "the prompt names more than {MAX_TAGS} LoRA adapters; stack at most {MAX_TAGS} at once"
            ));
        }
        let mut parts = cap[1].split(':');
        let name = parts.next().unwrap_or("").trim().to_string();
        if name.is_empty() {
            return Err(format!("the prompt tag {} names no LoRA", &cap[0]));
        }
        if !is_plain_name(&name) {
            return Err(format!(
                "the prompt tag {} names a path; a tag names an adapter in the LoRA folder by its file name \
                 (e.g. <lora:inkStyle:0.8>)",
                &cap[0]
            ));
        }
        let mut positional = Vec::new();
        let (mut te, mut unet) = (None, None);
        for part in parts {
            let bad = || format!("the prompt tag {} has an unreadable weight {part:?}", &cap[0]);
            match part.split_once('=') {
                Some(("te", v)) => te = Some(v.trim().parse::<f64>().map_err(|_| bad())?),
                Some(("unet", v)) => unet = Some(v.trim().parse::<f64>().map_err(|_| bad())?),
                Some(_) => {}
                None => positional.push(part.trim().parse::<f64>().map_err(|_| bad())?),
            }
        }
        let text_weight = te.or(positional.first().copied()).unwrap_or(1.0);
        let unet_weight = unet.or(positional.get(1).copied()).unwrap_or(text_weight);
        found.push(PromptLora { name, unet_weight, text_weight });
    }
    Ok(found)
}

/// Whether `name` is a file name and nothing more: a tag (from a prompt, a pasted civitai prompt or
/// an imported picture) may only pick an adapter inside the LoRA folder, never reach outside it.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !std::path::Path::new(name).has_root()
    // A Windows drive prefix (`C:`) cannot appear: `:` separates a tag's fields.
}

/// The prompt without its adapter tags, as the text encoder should see it.
pub fn strip_tags(prompt: &str) -> String {
    tag_pattern().replace_all(prompt, "").trim().to_string()
}

/// The prompt as saved in metadata: the text plus a tag per adapter, so A1111 and Easel rebuild
/// the same stack from it.
pub fn prompt_with_tags(prompt: &str, adapters: &[crate::engine::LoraSpec]) -> String {
    let mut out = prompt.to_string();
    for spec in adapters {
        out.push_str(&format!(" {}", tag(&spec.name, spec.unet_weight, spec.text_weight)));
    }
    out
}

/// The tag A1111 would write for these weights.
pub fn tag(name: &str, unet_weight: f64, text_weight: f64) -> String {
    if unet_weight == text_weight {
        format!("<lora:{name}:{unet_weight}>")
    } else {
        format!("<lora:{name}:{text_weight}:{unet_weight}>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_may_stack_at_most_sixty_four_adapters() {
        assert_eq!(parse_tags(&"<lora:ink:1>".repeat(MAX_TAGS)).expect("64 tags").len(), MAX_TAGS);
        let err = parse_tags(&"<lora:ink:1>".repeat(4000)).expect_err("4000 tags");
        assert!(err.contains("more than 64"), "{err}");
    }

    #[test]
    fn tags_cannot_name_files_outside_the_lora_folder() {
        for prompt in ["<lora:../outside:1>", "<lora:/abs/path:1>", "<lora:sub\\..\\x:1>", "<lora:..:1>"] {
            let err = parse_tags(prompt).expect_err(prompt);
            assert!(err.contains("names a path"), "{err}");
        }
        assert_eq!(parse_tags("<lora:ink.v2:1>").expect("a dotted name is a name")[0].name, "ink.v2");
    }

    #[test]
    fn reads_a1111_tags() {
        let tags =
            parse_tags("castle <lora:ink:0.8>, <lora:grain:0.5:1.2> <lora:plain> <lora:x:te=0:unet=2>")
                .expect("valid tags");
        assert_eq!(tags[0], PromptLora { name: "ink".into(), unet_weight: 0.8, text_weight: 0.8 });
        assert_eq!(tags[1], PromptLora { name: "grain".into(), unet_weight: 1.2, text_weight: 0.5 });
        assert_eq!(tags[2], PromptLora { name: "plain".into(), unet_weight: 1.0, text_weight: 1.0 });
        assert_eq!(tags[3], PromptLora { name: "x".into(), unet_weight: 2.0, text_weight: 0.0 });
    }

    #[test]
    fn strips_tags_for_the_text_encoder() {
        assert_eq!(strip_tags("castle on a hill, <lora:ink:0.8>"), "castle on a hill,");
    }

    #[test]
    fn bad_weights_are_reported() {
        assert!(parse_tags("<lora:ink:lots>").expect_err("refused").contains("lots"));
    }

    #[test]
    fn tags_round_trip() {
        for (u, t) in [(0.8, 0.8), (1.2, 0.5), (-15.0, -15.0)] {
            let parsed = parse_tags(&tag("ink", u, t)).expect("valid");
            assert_eq!((parsed[0].unet_weight, parsed[0].text_weight), (u, t));
        }
    }
}
