//! The Metrics tab: choose a reference folder, prompts and configurations (base, the current stack,
//! a weight sweep of one adapter), run the comparison on the worker, read FID / KID / IS / PSNR /
//! SSIM with time per picture and peak memory, plot a metric against the LoRA weight, and export
//! the table as CSV or JSON.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use egui::Ui;

use super::command::{Commands, MetricsPath, TableFormat, UiCommand};
use super::state::{AppState, EvalStatus, ModelStatus, Settings};
use crate::engine::LoraSpec;
use crate::worker::{EvalConfig, EvalJob, EvalResults, PromptSource};

/// Metric names, in table order, for the plot menu.
const METRICS: [&str; 5] = ["FID", "KID", "IS", "PSNR", "SSIM"];

/// The Metrics tab's own state.
#[derive(Debug, Default)]
pub struct MetricsView {
    /// Which metric the plot shows (an index into the table's metrics).
    pub metric_to_plot: usize,
}

/// The Metrics tab.
pub fn metrics_tab_ui(ui: &mut Ui, state: &mut AppState, view: &mut MetricsView, out: &mut Commands) {
    // A small window scrolls to every control and column instead of cutting them off.
    egui::ScrollArea::vertical()
        .auto_shrink([false, false])
        .show(ui, |ui| tab_contents_ui(ui, state, view, out));
}

fn tab_contents_ui(ui: &mut Ui, state: &mut AppState, view: &mut MetricsView, out: &mut Commands) {
    form_ui(ui, state, out);
    ui.separator();
    match &state.eval {
        EvalStatus::Idle => {
            ui.label("Results appear here: one row per configuration.");
        }
        EvalStatus::Running { stage, done, total, .. } => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.add(
                    egui::ProgressBar::new(*done as f32 / (*total).max(1) as f32)
                        .desired_width(240.0)
                        .text(format!("{stage} · {done}/{total} pictures")),
                );
                if ui.button("Stop comparison").clicked() {
                    out.push(UiCommand::StopComparison);
                }
            });
        }
        EvalStatus::Done(results) => results_ui(ui, results, view, out),
    }
}

fn form_ui(ui: &mut Ui, state: &mut AppState, out: &mut Commands) {
    let f = &mut state.settings.metrics;
    egui::Grid::new("metrics-form").num_columns(3).spacing([8.0, 6.0]).show(ui, |ui| {
        let label = ui.label("Reference folder");
        ui.add(egui::TextEdit::singleline(&mut f.reference_dir).desired_width(320.0)).labelled_by(label.id);
        if ui.button("Choose…").clicked() {
            out.push(UiCommand::ChooseMetricsPath(MetricsPath::References));
        }
        ui.end_row();
        let label = ui.label("Prompt list");
        ui.add_enabled(
            !f.use_captions,
            egui::TextEdit::singleline(&mut f.prompt_file)
                .desired_width(320.0)
                .hint_text("empty: the prompt on the left"),
        )
        .labelled_by(label.id);
        if ui.button("Choose…").clicked() {
            out.push(UiCommand::ChooseMetricsPath(MetricsPath::Prompts));
        }
        ui.end_row();
        ui.label("");
        ui.checkbox(&mut f.use_captions, "Captions beside the references (name.txt)");
        ui.end_row();
        let label = ui.label("Pictures per configuration");
        ui.add(egui::DragValue::new(&mut f.images_per_config).range(2..=5000)).labelled_by(label.id);
        ui.end_row();
        ui.label("Configurations");
        ui.horizontal(|ui| {
            ui.checkbox(&mut f.include_base, "Base model");
            ui.checkbox(&mut f.include_stack, "Current LoRA stack");
        });
        ui.end_row();
        let label = ui.label("Sweep weights");
        ui.add(
            egui::TextEdit::singleline(&mut f.sweep_weights)
                .desired_width(320.0)
                .hint_text("e.g. 0.25, 0.5, 1 (first enabled LoRA)"),
        )
        .labelled_by(label.id);
        ui.end_row();
        let label = ui.label("Inception weights");
        ui.add(egui::TextEdit::singleline(&mut f.inception).desired_width(320.0)).labelled_by(label.id);
        if ui.button("Choose…").clicked() {
            out.push(UiCommand::ChooseMetricsPath(MetricsPath::Inception));
        }
        ui.end_row();
    });
    let running = matches!(state.eval, EvalStatus::Running { .. });
    let ready = matches!(state.model, ModelStatus::Ready(_));
    if ui.add_enabled(ready && !running, egui::Button::new("Run comparison")).clicked() {
        out.push(UiCommand::RunComparison);
    }
}

/// The configurations the form asks for.
fn configs(s: &Settings) -> Result<Vec<EvalConfig>, String> {
    let stack: Vec<LoraSpec> = s.loras.iter().filter(|l| l.enabled).map(|l| l.spec()).collect();
    let mut out = Vec::new();
    if s.metrics.include_base {
        out.push(EvalConfig { label: "base".into(), loras: vec![], weight: Some(0.0) });
    }
    if s.metrics.include_stack && !stack.is_empty() {
        let label =
            stack.iter().map(|l| format!("{} {}", l.name, l.unet_weight)).collect::<Vec<_>>().join(" + ");
        out.push(EvalConfig { label, loras: stack.clone(), weight: None });
    }
    let sweep = super::compare::parse_weights(&s.metrics.sweep_weights)?;
    if !sweep.is_empty() {
        let first = stack.first().ok_or("a weight sweep needs an enabled LoRA in the stack")?;
        for w in sweep {
            let label = format!("{} × {w}", first.name);
            if out.iter().any(|c| c.label == label) {
                continue;
            }
            let loras = vec![LoraSpec { unet_weight: w, text_weight: w, ..first.clone() }];
            out.push(EvalConfig { label, loras, weight: Some(w) });
        }
    }
    if out.is_empty() {
        return Err("choose at least one configuration to compare".into());
    }
    Ok(out)
}

/// The comparison the form describes, with its cancel flag, or why it cannot run.
pub fn comparison_job(state: &AppState) -> Result<EvalJob, String> {
    let f = &state.settings.metrics;
    let configs = configs(&state.settings)?;
    if f.reference_dir.trim().is_empty() {
        return Err("Choose the folder of reference pictures first.".into());
    }
    let prompts = if f.use_captions {
        PromptSource::Captions
    } else if !f.prompt_file.trim().is_empty() {
        PromptSource::File(PathBuf::from(f.prompt_file.trim()))
    } else {
        PromptSource::Single(state.settings.prompt.clone())
    };
    let stamp = crate::history::now_unix();
    Ok(EvalJob {
        reference_dir: PathBuf::from(f.reference_dir.trim()),
        prompts,
        configs,
        images_per_config: f.images_per_config,
        settings: crate::engine::GenerationRequest { batch: 1, loras: vec![], ..state.settings.request() },
        inception: PathBuf::from(f.inception.trim()),
        output_dir: state.paths.evaluations().join(stamp.to_string()),
        cancel: Arc::new(AtomicBool::new(false)),
    })
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |x| format!("{x:.digits$}"))
}

fn results_ui(ui: &mut Ui, results: &EvalResults, view: &mut MetricsView, out: &mut Commands) {
    ui.label(format!(
        "{} against {} ({} steps, {})",
        results.model,
        results.reference_dir.display(),
        results.settings.steps,
        results.settings.sampler.id()
    ));
    egui::ScrollArea::horizontal().id_salt("metrics-table-scroll").show(ui, |ui| table_ui(ui, results));
    for row in &results.rows {
        for w in &row.report.warnings {
            ui.add(egui::Label::new(egui::RichText::new(format!("{}: {w}", row.config.label)).weak()).wrap());
        }
        // Pictures left out are named with the reason, so a number is never silently over fewer.
        for skipped in row.report.unreadable.iter().chain(&row.report.skipped_pairs) {
            ui.add(
                egui::Label::new(
                    egui::RichText::new(format!("{}: skipped {skipped}", row.config.label)).weak(),
                )
                .wrap(),
            );
        }
    }
    results_footer_ui(ui, results, view, out);
}

fn table_ui(ui: &mut Ui, results: &EvalResults) {
    egui::Grid::new("metrics-table").striped(true).num_columns(9).spacing([14.0, 4.0]).show(ui, |ui| {
        for h in
            ["configuration", "pictures", "FID", "KID", "IS", "PSNR", "SSIM", "s / picture", "peak memory"]
        {
            ui.strong(h);
        }
        ui.end_row();
        for row in &results.rows {
            let r = &row.report;
            ui.label(&row.config.label);
            ui.label(r.count.to_string());
            ui.label(fmt(r.fid, 3));
            ui.label(r.kid.map_or("—".into(), |k| format!("{:.4} ± {:.4}", k.mean, k.std)));
            ui.label(r.inception_score.map_or("—".into(), |s| format!("{:.3} ± {:.3}", s.mean, s.std)));
            ui.label(fmt(r.psnr, 2));
            ui.label(fmt(r.ssim, 4));
            ui.label(format!("{:.2}", row.secs_per_image));
            ui.label(row.peak_memory_bytes.map_or("—".into(), |b| format!("{:.2} GB", b as f64 / 1e9)));
            ui.end_row();
        }
    });
}

fn results_footer_ui(ui: &mut Ui, results: &EvalResults, view: &mut MetricsView, out: &mut Commands) {
    ui.horizontal(|ui| {
        if ui.button("Export CSV…").clicked() {
            out.push(UiCommand::ExportMetrics(TableFormat::Csv));
        }
        if ui.button("Export JSON…").clicked() {
            out.push(UiCommand::ExportMetrics(TableFormat::Json));
        }
        let metric = view.metric_to_plot.min(METRICS.len() - 1);
        egui::ComboBox::from_label("Plot").selected_text(METRICS[metric]).show_ui(ui, |ui| {
            for (i, m) in METRICS.iter().enumerate() {
                ui.selectable_value(&mut view.metric_to_plot, i, *m);
            }
        });
    });
    plot_ui(ui, results, view.metric_to_plot.min(METRICS.len() - 1));
}

fn metric_value(row: &crate::worker::ConfigResult, metric: usize) -> Option<f64> {
    let r = &row.report;
    match metric {
        0 => r.fid,
        1 => r.kid.map(|k| k.mean),
        2 => r.inception_score.map(|s| s.mean),
        3 => r.psnr,
        _ => r.ssim,
    }
}

fn plot_ui(ui: &mut Ui, results: &EvalResults, metric: usize) {
    let points: Vec<[f64; 2]> = results
        .rows
        .iter()
        .filter_map(|row| Some([row.config.weight?, metric_value(row, metric)?]))
        .collect();
    if points.len() < 2 {
        ui.weak("Add a weight sweep to plot a metric against the LoRA weight.");
        return;
    }
    let mut sorted = points.clone();
    sorted.sort_by(|a, b| a[0].total_cmp(&b[0]));
    egui_plot::Plot::new("metric-vs-weight")
        .height(220.0)
        .x_axis_label("LoRA weight")
        .y_axis_label(METRICS[metric])
        .show(ui, |plot| {
            plot.line(egui_plot::Line::new(METRICS[metric], egui_plot::PlotPoints::from(sorted)));
            plot.points(
                egui_plot::Points::new("configurations", egui_plot::PlotPoints::from(points)).radius(4.0),
            );
        });
}

/// The table as CSV (one row per configuration).
pub fn to_csv(results: &EvalResults) -> String {
    let mut out = String::from("configuration,weight,pictures,fid,kid_mean,kid_std,is_mean,is_std,psnr,ssim,secs_per_image,peak_memory_bytes\n");
    let opt = |v: Option<f64>| v.map_or(String::new(), |x| x.to_string());
    for row in &results.rows {
        let r = &row.report;
        let label = row.config.label.replace('"', "\"\"");
        out.push_str(&format!(
            "\"{label}\",{},{},{},{},{},{},{},{},{},{},{}\n",
            opt(row.config.weight),
            r.count,
            opt(r.fid),
            opt(r.kid.map(|k| k.mean)),
            opt(r.kid.map(|k| k.std)),
            opt(r.inception_score.map(|s| s.mean)),
            opt(r.inception_score.map(|s| s.std)),
            opt(r.psnr),
            opt(r.ssim),
            row.secs_per_image,
            row.peak_memory_bytes.map_or(String::new(), |b| b.to_string()),
        ));
    }
    out
}

/// The table in `format`.
pub fn table_text(results: &EvalResults, format: TableFormat) -> Result<String, String> {
    match format {
        TableFormat::Csv => Ok(to_csv(results)),
        TableFormat::Json => serde_json::to_string_pretty(results).map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use egui_kittest::kittest::Queryable;

    use super::super::test_support::{harness, pushed, session, session_with_model};
    use super::*;

    #[test]
    fn the_form_asks_for_dialogs_and_the_run() {
        let (_dir, state) = session_with_model();
        let mut h = harness(state, MetricsView::default(), metrics_tab_ui);
        h.run();
        let wanted = [MetricsPath::References, MetricsPath::Prompts, MetricsPath::Inception];
        for (i, which) in wanted.into_iter().enumerate() {
            h.get_all_by_label("Choose…").nth(i).expect("a Choose button per path").click();
            h.run();
            assert_eq!(pushed(&mut h), [UiCommand::ChooseMetricsPath(which)]);
        }
        h.get_by_label("Run comparison").click();
        h.run();
        assert_eq!(pushed(&mut h), [UiCommand::RunComparison]);
    }

    #[test]
    fn a_comparison_needs_references_and_a_configuration() {
        let (_dir, mut state) = session();
        assert!(comparison_job(&state).expect_err("no folder").contains("reference pictures"));
        state.settings.metrics.reference_dir = "refs".into();
        state.settings.metrics.include_base = false;
        assert!(comparison_job(&state)
            .expect_err("nothing to compare")
            .contains("at least one configuration"));
        state.settings.metrics.include_base = true;
        state.settings.metrics.sweep_weights = "0.5, x".into();
        assert!(comparison_job(&state).expect_err("bad weight").contains("\"x\""));
        state.settings.metrics.sweep_weights.clear();
        let job = comparison_job(&state).expect("the base model alone");
        assert_eq!(job.configs.len(), 1);
        assert_eq!(job.settings.batch, 1);
    }
}
