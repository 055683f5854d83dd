//! `custody report`: the post-migration report for a change board and an
//! auditor, as Markdown, self-contained HTML, or JSON.

use std::io::Write;
use std::path::PathBuf;

use custody::report::Report;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::args::TrustArgs;
use super::load::open_manifest_file;
use super::{Code, Failure, Global, Outcome, print_json, render};

/// Write the post-migration report of a sealed manifest.
///
/// Write the post-migration report of a sealed manifest: what moved
/// (files, bytes, DICOM studies), when, how fast (throughput over time),
/// failures by class, each verification, the custody timeline and the
/// signers. The manifest's signature is checked first. The custody events
/// come from the ledger, or from a timeline exported with `custody log
/// --manifest ID --export FILE` (--events). The report names no file.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  custody report manifests/20261124T021500Z-3fa9c2d1.json --allowed-signers allowed_signers \\
      --format html --out wave-1-report.html

Exit codes: 0 written, 1 bad manifest signature, 2 usage error (no ledger, no events for
this manifest).")]
pub struct Args {
    /// The manifest (`<id>.json`; its signature is `<id>.json.sig`).
    #[arg(value_name = "MANIFEST")]
    manifest: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// `md` (Markdown), `html` (one self-contained page with a throughput
    /// chart), or `json`. `--json` means `--format json`.
    #[arg(long, value_enum, default_value = "md")]
    format: Format,
    /// Write the report here instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    out: Option<PathBuf>,
    /// Take the custody events from this exported timeline (`custody log
    /// --export`) instead of the ledger.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Md,
    Html,
    Json,
}

pub fn run(args: &Args, g: &Global) -> Outcome {
    let signed = open_manifest_file(&args.manifest, &args.trust)?;
    let events = match &args.events {
        Some(path) => std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| {
                    anyhow::anyhow!("{}: not an exported timeline: {e}", path.display())
                })
            })
            .map_err(Failure::usage)?,
        None => custody::ledger::Ledger::open_existing(&g.ledger)
            .and_then(|l| l.export_events(&signed.head.id))
            .map_err(|e| {
                Failure::usage(e).hint(
                    "report needs the ledger that sealed the manifest (--ledger), \
                     or its exported timeline (--events FILE)",
                )
            })?,
    };
    let report =
        custody::report::build(&signed, &signed.signer, &events).map_err(Failure::usage)?;
    let format = if g.json { Format::Json } else { args.format };
    let text = match format {
        Format::Json if args.out.is_none() => {
            print_json(&report);
            return Ok(Code::Ok);
        }
        Format::Json => serde_json::to_string_pretty(&report).expect("a report serialises") + "\n",
        Format::Md => markdown(&report),
        Format::Html => html_page(&report).into_string(),
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, text)
                .map_err(|e| Failure::usage(anyhow::anyhow!("{}: {e}", path.display())))?;
            if !g.quiet {
                eprintln!("custody: report written to {}", path.display());
            }
        }
        None => {
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        }
    }
    Ok(Code::Ok)
}

/// A recorded time for people: "2026-11-24 19:00:02 UTC".
fn when(at: &str) -> String {
    at.parse::<jiff::Timestamp>()
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| at.to_owned())
}

/// Seconds for people: "3h 12m", "41s".
fn seconds(s: f64) -> String {
    let d = jiff::SignedDuration::from_secs(s.round() as i64);
    format!("{d:#}")
}

fn rate(bps: f64) -> String {
    format!("{}/s", render::bytes(bps as u64))
}

/// A Markdown table cell: no pipes or line breaks from the data.
/// A value as Markdown text: every character Markdown (CommonMark, and
/// GitHub's tables) would read as markup is backslash-escaped, so that an
/// operator identity, a handoff field or a file name shows as written and
/// cannot add emphasis, a link, an image, raw HTML or a table column; line
/// breaks and other control characters become spaces or escapes.
fn cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '&' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => out.extend(c.escape_debug()),
            c => out.push(c),
        }
    }
    out
}

/// The figures both formats show, as (label, value).
fn figures(r: &Report) -> Vec<(&'static str, String)> {
    let m = &r.manifest;
    let t = &r.timing;
    let mut rows = vec![
        ("Manifest", m.id.clone()),
        ("Manifest BLAKE3", m.blake3.clone()),
        ("Sealed", when(&m.created)),
        ("Source", m.source.clone()),
        ("Destination", m.destination.clone()),
        ("Host", m.host.clone()),
        ("Operator", m.operator.clone()),
        ("Files", m.files.to_string()),
        ("Bytes", format!("{} ({})", m.bytes, render::bytes(m.bytes))),
        ("Excluded", m.excluded.to_string()),
        (
            "Encryption",
            m.encryption_key_id
                .as_ref()
                .map_or("none".into(), |k| format!("AES-256-GCM, key {k}")),
        ),
        ("Started", t.started.as_deref().map_or("-".into(), when)),
        ("Attempts", t.attempts.to_string()),
        ("Elapsed (start to seal)", seconds(t.elapsed_seconds)),
        ("Copying", seconds(t.copying_seconds)),
        ("Average rate", rate(t.bytes_per_second)),
        (
            "Signed by",
            format!(
                "{}{}",
                r.signature.fingerprint,
                r.signature
                    .principal
                    .as_deref()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default()
            ),
        ),
        ("Tool", m.tool.clone()),
    ];
    if let Some(w) = &m.wave {
        rows.splice(
            1..1,
            [
                ("Wave", w.name.clone()),
                ("Change", w.change.clone()),
                ("Wave owner", w.owner.clone()),
                ("Rollback contact", w.rollback_contact.clone()),
            ],
        );
    }
    if let Some(d) = &r.dicom {
        let at = rows
            .iter()
            .position(|(k, _)| *k == "Excluded")
            .unwrap_or(rows.len());
        rows.insert(at, ("DICOM studies", d.studies.to_string()));
        rows.insert(at + 1, ("DICOM series", d.series.to_string()));
        rows.insert(at + 2, ("DICOM instances", d.instances.to_string()));
    }
    rows
}

/// The verdict line: the latest verification's result.
fn verdict(r: &Report) -> String {
    match r
        .verifications
        .iter()
        .rev()
        .find(|v| v.kind == custody::ledger::kind::VERIFIED)
    {
        Some(v) if v.result == "pass" => format!(
            "VERIFIED: every file re-read and matched at {} ({})",
            v.destination.as_deref().unwrap_or("?"),
            when(&v.at)
        ),
        Some(v) => format!(
            "VERIFICATION FAILED at {} ({})",
            v.destination.as_deref().unwrap_or("?"),
            when(&v.at)
        ),
        None => "NOT VERIFIED: no verification is recorded".into(),
    }
}

fn markdown(r: &Report) -> String {
    let mut o = String::new();
    let mut line = |s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    line(format!("# Custody report: {}", cell(&r.manifest.id)));
    line(String::new());
    line(format!("**{}**", verdict(r)));
    line(String::new());
    line("| | |".into());
    line("| --- | --- |".into());
    for (k, v) in figures(r) {
        line(format!("| {k} | {} |", cell(&v)));
    }
    line(String::new());
    if let Some(d) = &r.dicom {
        line("## Modalities".into());
        line(String::new());
        line("| modality | instances |".into());
        line("| --- | ---: |".into());
        for (m, n) in &d.modalities {
            line(format!("| {} | {n} |", cell(m)));
        }
        line(String::new());
    }
    line("## Throughput".into());
    line(String::new());
    line("| from | seconds | bytes | rate |".into());
    line("| --- | ---: | ---: | ---: |".into());
    for s in &r.throughput {
        line(format!(
            "| {} | {:.0} | {} | {} |",
            when(&s.from),
            s.seconds,
            s.bytes,
            rate(s.bytes_per_second)
        ));
    }
    line(String::new());
    line("## Failures by class".into());
    line(String::new());
    if r.errors.is_empty() {
        line("No file failed in any attempt.".into());
    } else {
        line("| class | files |".into());
        line("| --- | ---: |".into());
        for (c, n) in &r.errors {
            line(format!("| {} | {n} |", cell(c)));
        }
        line(String::new());
        line("(Each failed file was copied by a later attempt: the manifest is sealed.)".into());
    }
    line(String::new());
    line("## Verifications".into());
    line(String::new());
    line("| at | check | result | where | files proven | signed by |".into());
    line("| --- | --- | --- | --- | ---: | --- |".into());
    for v in &r.verifications {
        line(format!(
            "| {} | {} | {} | {} | {} | {} |",
            when(&v.at),
            cell(&v.kind),
            cell(&v.result),
            cell(v.destination.as_deref().unwrap_or("")),
            v.files_verified.map(|n| n.to_string()).unwrap_or_default(),
            cell(v.signer.as_deref().unwrap_or(""))
        ));
    }
    line(String::new());
    line("## Custody timeline".into());
    line(String::new());
    line("| seq | at | event | what | signed by |".into());
    line("| ---: | --- | --- | --- | --- |".into());
    for e in &r.timeline {
        line(format!(
            "| {} | {} | {} | {} | {} |",
            e.seq,
            when(&e.at),
            cell(&e.kind),
            cell(&e.summary),
            cell(e.signer.as_deref().unwrap_or(""))
        ));
    }
    line(String::new());
    line("## Signers".into());
    line(String::new());
    line("| key | events signed |".into());
    line("| --- | ---: |".into());
    for s in &r.signers {
        line(format!("| {} | {} |", cell(&s.fingerprint), s.events));
    }
    o
}

const STYLE: &str = "
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #1b1f24; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; margin: .6em 0; }
td, th { border: 1px solid #d0d7de; padding: .25em .6em; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
td.at { white-space: nowrap; }
code, .mono { font-family: ui-monospace, monospace; font-size: .92em; word-break: break-all; }
.verdict { font-weight: 600; padding: .5em .8em; border-radius: 4px; display: inline-block; }
.pass { background: #dafbe1; color: #116329; }
.fail { background: #ffebe9; color: #a40e26; }
svg text { font: 11px system-ui, sans-serif; fill: #57606a; }
";

/// The throughput chart: one bar per slice, as inline SVG.
fn chart(r: &Report) -> Markup {
    let (w, h, left, bottom) = (720.0, 220.0, 70.0, 30.0);
    let max = r
        .throughput
        .iter()
        .map(|s| s.bytes_per_second)
        .fold(0.0, f64::max)
        .max(1.0);
    let n = r.throughput.len().max(1) as f64;
    let bar = (w - left - 10.0) / n;
    html! {
        svg id="throughput" xmlns="http://www.w3.org/2000/svg" width=(w) height=(h)
            role="img" aria-label="Bytes landed per second over the copy" {
            line x1=(left) y1=(h - bottom) x2=(w - 10.0) y2=(h - bottom) stroke="#8c959f" {}
            line x1=(left) y1="10" x2=(left) y2=(h - bottom) stroke="#8c959f" {}
            text x=(left - 6.0) y="16" text-anchor="end" { (rate(max)) }
            text x=(left - 6.0) y=(h - bottom) text-anchor="end" { "0" }
            @for (i, s) in r.throughput.iter().enumerate() {
                @let bh = (h - bottom - 10.0) * s.bytes_per_second / max;
                rect x=(left + i as f64 * bar + 1.0) y=(h - bottom - bh)
                    width=((bar - 2.0).max(1.0)) height=(bh) fill="#2f81f7" {
                    title { (when(&s.from)) ": " (rate(s.bytes_per_second)) }
                }
            }
            @if let Some(first) = r.throughput.first() {
                text x=(left) y=(h - 10.0) { (when(&first.from)) }
            }
            @if let Some(last) = r.throughput.last() {
                text x=(w - 10.0) y=(h - 10.0) text-anchor="end" { (when(&last.from)) }
            }
        }
    }
}

fn html_page(r: &Report) -> Markup {
    let title = format!("Custody report: {}", r.manifest.id);
    let verdict_text = verdict(r);
    let class = if verdict_text.starts_with("VERIFIED") {
        "verdict pass"
    } else {
        "verdict fail"
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (title) }
                p class=(class) id="verdict" { (verdict_text) }
                table id="figures" {
                    @for (k, v) in figures(r) {
                        tr { th { (k) } td class="mono" { (v) } }
                    }
                }
                @if let Some(d) = &r.dicom {
                    h2 { "Modalities" }
                    table {
                        tr { th { "modality" } th class="n" { "instances" } }
                        @for (m, n) in &d.modalities {
                            tr { td { (m) } td class="n" { (n) } }
                        }
                    }
                }
                h2 { "Throughput" }
                (chart(r))
                h2 { "Failures by class" }
                @if r.errors.is_empty() {
                    p { "No file failed in any attempt." }
                } @else {
                    table id="errors" {
                        tr { th { "class" } th class="n" { "files" } }
                        @for (c, n) in &r.errors {
                            tr { td { (c) } td class="n" { (n) } }
                        }
                    }
                    p { "Each failed file was copied by a later attempt: the manifest is sealed." }
                }
                h2 { "Verifications" }
                table id="verifications" {
                    tr { th { "at" } th { "check" } th { "result" } th { "where" } th class="n" { "files proven" } th { "signed by" } }
                    @for v in &r.verifications {
                        tr {
                            td class="at" { (when(&v.at)) } td { (v.kind) } td { (v.result) }
                            td class="mono" { (v.destination.as_deref().unwrap_or("")) }
                            td class="n" { (v.files_verified.map(|n| n.to_string()).unwrap_or_default()) }
                            td class="mono" { (v.signer.as_deref().unwrap_or("")) }
                        }
                    }
                }
                h2 { "Custody timeline" }
                table id="timeline" {
                    tr { th class="n" { "seq" } th { "at" } th { "event" } th { "what" } th { "signed by" } }
                    @for e in &r.timeline {
                        tr {
                            td class="n" { (e.seq) } td class="at" { (when(&e.at)) } td { (e.kind) }
                            td { (e.summary) } td class="mono" { (e.signer.as_deref().unwrap_or("")) }
                        }
                    }
                }
                h2 { "Signers" }
                table id="signers" {
                    tr { th { "key" } th class="n" { "events signed" } }
                    @for s in &r.signers {
                        tr { td class="mono" { (s.fingerprint) } td class="n" { (s.events) } }
                    }
                }
            }
        }
    }
}
