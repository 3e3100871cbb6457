//! `adiff explain --plot`: a figure like the paper's Figure 5, to check an explanation against
//! what HTSAT heard. For each audio: its log-mel spectrogram and, below it on the same time
//! axis, the frame-wise probability of its top AudioSet events; the explanation is the title.
//!
//! `explain --window --plot` draws each whole file's spectrogram instead ([`WindowFigure`]),
//! gathered window by window in bounded memory ([`LogMelTimeline`]), with the windows marked.
//!
//! The figure is drawn with `plotters` into an RGB buffer and written as PNG with the `png`
//! crate (temp file then rename, so a failed run never leaves half a figure). Text uses the
//! bundled DejaVu Sans through `ab_glyph`, so no system font library is needed; `GlyphBackend`
//! sets it itself because plotters 0.3.7's `ab_glyph` text path drops each glyph's left side
//! bearing (uneven letter spacing, "cl" reading as "d").

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, OutlinedGlyph, ScaleFont};
use candle_core::{DType, Tensor};
use plotters::coord::Shift;
use plotters::prelude::*;
// The style traits stay path-qualified: in scope they would clash with `Color::stroke_width`.
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};
use plotters_backend::{BackendColor, BackendCoord, DrawingErrorKind};

use crate::error::{AdiffError, Result};

/// DejaVu Sans 2.37 (Debian fonts-dejavu-core); license in data/fonts/LICENSE-DejaVu.txt.
static FONT_TTF: &[u8] = include_bytes!("../data/fonts/DejaVuSans.ttf");
/// Family name plotters' default styles (axis labels) ask for; the bundled font is registered
/// under it.
const FONT_FAMILY: &str = "sans-serif";

/// AudioSet events drawn per audio (the paper's Figure 5 shows three).
pub const TOP_EVENTS: usize = 3;
/// Figure width in pixels; the height follows from the number of title lines.
pub const FIGURE_WIDTH: u32 = 1600;
/// Title lines kept at most; a longer explanation ends with an ellipsis.
pub const MAX_TITLE_LINES: usize = 12;
/// Spectrogram colours span at most this many dB below the loudest bin of the figure
/// (librosa's `top_db`), so digital silence does not flatten the rest.
pub const DYNAMIC_RANGE_DB: f32 = 80.0;

// Layout, in pixels.
const MARGIN: u32 = 24;
const TITLE_FONT: f64 = 24.0;
const TITLE_LINE: u32 = 32;
const HEADER_FONT: f64 = 22.0;
const HEADER_H: u32 = 40;
const LABEL_FONT: f64 = 16.0;
const AXIS_DESC_FONT: f64 = 18.0;
const SPEC_H: u32 = 330;
const PROB_H: u32 = 250;
const LEGEND_ROW: u32 = 26;
const LEGEND_LINE_W: i32 = 36;
const X_LABEL_AREA: u32 = 50;
const Y_LABEL_AREA: u32 = 70;
/// Room right of each plot for the spectrogram's colour bar (kept under the probability plot
/// too, so both time axes line up).
const COLORBAR_AREA: u32 = 100;
const COLORBAR_W: i32 = 18;
const COLORBAR_GAP: i32 = 12;
const COLORBAR_TICKS: usize = 5;
const COLUMN_GAP: u32 = 40;
const LINE_WIDTH: u32 = 3;
const TIME_TICKS: usize = 11;
/// Matplotlib's first tab10 colours: distinct, and readable on white.
const EVENT_COLORS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];

/// Everything the figure shows, as plain data (no model needed to build one).
#[derive(Debug, Clone)]
pub struct ExplanationFigure {
    /// The generated answer(s), one paragraph each, drawn wrapped as the title.
    pub explanations: Vec<String>,
    /// Clip length in seconds: the time axis of every plot.
    pub duration_s: f32,
    /// One column per audio (two for `explain`).
    pub audios: Vec<AudioPanel>,
}

/// One audio's column.
#[derive(Debug, Clone)]
pub struct AudioPanel {
    /// Shown above the column (the file name).
    pub name: String,
    /// Log-mel in dB, row-major `[mel_frames, mel_bins]`.
    pub logmel: Vec<f32>,
    pub mel_frames: usize,
    pub mel_bins: usize,
    /// The events to draw, most probable first; each probability curve has the same length.
    pub events: Vec<EventTrack>,
}

/// One AudioSet event's presence over time.
#[derive(Debug, Clone)]
pub struct EventTrack {
    pub label: String,
    /// Clip-wise probability, shown in the legend.
    pub clip_probability: f32,
    /// Frame-wise probability, evenly spread over the clip.
    pub framewise: Vec<f32>,
}

impl ExplanationFigure {
    /// Builds the figure from `AudioEncoder::encode`'s outputs: `logmel` `[B, T, M]`,
    /// `framewise` `[B, F, C]`, `clipwise` `[B, C]`; keeps the [`TOP_EVENTS`] classes with the
    /// highest clip-wise probability of each audio.
    #[allow(clippy::too_many_arguments)]
    pub fn from_outputs(
        names: &[String],
        logmel: &Tensor,
        framewise: &Tensor,
        clipwise: &Tensor,
        labels: &[String],
        explanations: Vec<String>,
        duration_s: f32,
    ) -> Result<Self> {
        let (b, mel_frames, mel_bins) = logmel.dims3()?;
        let (fb, frames, classes) = framewise.dims3()?;
        let (cb, cc) = clipwise.dims2()?;
        if b != names.len() || fb != b || cb != b {
            return Err(AdiffError::Invalid(format!(
                "figure: {} names but batches of {b} (log-mel), {fb} (framewise), {cb} (clipwise)",
                names.len()
            )));
        }
        if classes != labels.len() || cc != labels.len() {
            return Err(AdiffError::Invalid(format!(
                "figure: {} labels but {classes} framewise and {cc} clipwise classes",
                labels.len()
            )));
        }
        let to_host = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
        };
        let logmel = to_host(logmel)?;
        let framewise = to_host(framewise)?;
        let clipwise = to_host(clipwise)?;
        let audios = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                // [C] clip-wise and [F, C] frame-wise probabilities of audio i.
                let clip = &clipwise[i * classes..(i + 1) * classes];
                let frame = &framewise[i * frames * classes..(i + 1) * frames * classes];
                let mut order: Vec<usize> = (0..classes).collect();
                order.sort_by(|&a, &b| clip[b].total_cmp(&clip[a]));
                let events = order
                    .into_iter()
                    .take(TOP_EVENTS)
                    .map(|k| EventTrack {
                        label: labels[k].clone(),
                        clip_probability: clip[k],
                        framewise: (0..frames).map(|f| frame[f * classes + k]).collect(),
                    })
                    .collect();
                let n = mel_frames * mel_bins;
                AudioPanel {
                    name: name.clone(),
                    logmel: logmel[i * n..(i + 1) * n].to_vec(),
                    mel_frames,
                    mel_bins,
                    events,
                }
            })
            .collect();
        Ok(Self {
            explanations,
            duration_s,
            audios,
        })
    }

    /// Checks the data is drawable; every error names the audio and what is wrong.
    fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(AdiffError::Invalid(format!("figure: {msg}")));
        if self.audios.is_empty() {
            return bad("no audio to draw".into());
        }
        if !(self.duration_s.is_finite() && self.duration_s > 0.0) {
            return bad(format!("duration {} s is not positive", self.duration_s));
        }
        for a in &self.audios {
            if a.mel_frames == 0 || a.mel_bins == 0 {
                return bad(format!("{}: empty log-mel", a.name));
            }
            if a.logmel.len() != a.mel_frames * a.mel_bins {
                return bad(format!(
                    "{}: log-mel has {} values, not {} x {}",
                    a.name,
                    a.logmel.len(),
                    a.mel_frames,
                    a.mel_bins
                ));
            }
            if a.logmel.iter().any(|v| !v.is_finite()) {
                return bad(format!("{}: log-mel has non-finite values", a.name));
            }
            if a.events.len() > EVENT_COLORS.len() {
                return bad(format!(
                    "{}: {} events, at most {} can be drawn",
                    a.name,
                    a.events.len(),
                    EVENT_COLORS.len()
                ));
            }
            for e in &a.events {
                if e.framewise.is_empty() {
                    return bad(format!("{}: event '{}' has no frames", a.name, e.label));
                }
                let finite = e.framewise.iter().chain([&e.clip_probability]);
                if finite.into_iter().any(|v| !v.is_finite()) {
                    return bad(format!(
                        "{}: event '{}' has non-finite probabilities",
                        a.name, e.label
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The bundled font, parsed once; also registered with plotters for any text it lays out itself.
fn font() -> Result<&'static FontRef<'static>> {
    static FONT: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT.get_or_init(|| {
        let ok = register_font(FONT_FAMILY, FontStyle::Normal, FONT_TTF).is_ok();
        FontRef::try_from_slice(FONT_TTF).ok().filter(|_| ok)
    })
    .as_ref()
    .ok_or_else(|| {
        AdiffError::Invalid(
            "figure: the bundled font data/fonts/DejaVuSans.ttf does not parse".into(),
        )
    })
}

fn draw_err(e: impl std::fmt::Display) -> AdiffError {
    AdiffError::Invalid(format!("figure: drawing failed: {e}"))
}

/// `text` set at `size` px: its outlined glyphs (the box's top-left at the origin, baseline at
/// the ascent) and the box's width and height in pixels.
fn layout(font: &FontRef<'static>, size: f64, text: &str) -> (Vec<OutlinedGlyph>, u32, u32) {
    let scaled = font.as_scaled(size as f32);
    let mut caret = 0f32;
    let mut prev = None;
    let mut glyphs = Vec::new();
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            caret += scaled.kern(p, id);
        }
        let glyph =
            id.with_scale_and_position(size as f32, ab_glyph::point(caret, scaled.ascent()));
        caret += scaled.h_advance(id);
        prev = Some(id);
        glyphs.extend(font.outline_glyph(glyph));
    }
    let height = scaled.ascent() - scaled.descent();
    (glyphs, caret.ceil() as u32, height.ceil() as u32)
}

/// Width in pixels of `text` at `size` px.
fn text_width(font: &FontRef<'static>, size: f64, text: &str) -> u32 {
    layout(font, size, text).1
}

/// Greedy word wrap of the paragraphs into lines at most `width` pixels wide (a word wider
/// than a line is split between characters), at most `max_lines` lines (the last then ends
/// with an ellipsis).
fn wrap(paragraphs: &[String], size: f64, width: u32, max_lines: usize) -> Result<Vec<String>> {
    let font = font()?;
    let fits = |t: &str| text_width(font, size, t) <= width;
    let mut lines = Vec::new();
    for p in paragraphs {
        let mut line = String::new();
        for word in p.split_whitespace() {
            let candidate = if line.is_empty() {
                word.to_string()
            } else {
                format!("{line} {word}")
            };
            if fits(&candidate) {
                line = candidate;
                continue;
            }
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            // The word alone may still be too wide: break it between characters.
            for c in word.chars() {
                line.push(c);
                if !fits(&line) && line.chars().count() > 1 {
                    line.pop();
                    lines.push(std::mem::replace(&mut line, c.to_string()));
                }
            }
        }
        if !line.is_empty() || p.trim().is_empty() {
            lines.push(line);
        }
    }
    if lines.len() > max_lines {
        lines.truncate(max_lines);
        if let Some(last) = lines.last_mut() {
            last.push_str(" …");
        }
    }
    Ok(lines)
}

/// `text` shortened from the left with "…" until it fits `width` pixels at `size` px (file
/// paths: the name at the end is the informative part).
fn elide_left(font: &FontRef<'static>, size: f64, text: &str, width: u32) -> String {
    if text_width(font, size, text) <= width {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    (1..chars.len())
        .map(|k| format!("…{}", chars[k..].iter().collect::<String>()))
        .find(|t| text_width(font, size, t) <= width)
        .unwrap_or_else(|| "…".to_string())
}

/// A bitmap backend whose text is set with the bundled font by this module; everything else is
/// the wrapped backend's.
struct GlyphBackend<B> {
    inner: B,
    font: &'static FontRef<'static>,
}

impl<B: DrawingBackend> DrawingBackend for GlyphBackend<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }
    fn ensure_prepared(&mut self) -> std::result::Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.ensure_prepared()
    }
    fn present(&mut self) -> std::result::Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.present()
    }
    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> std::result::Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }
    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> std::result::Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }
    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> std::result::Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> std::result::Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.draw_path(path, style)
    }
    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> std::result::Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> std::result::Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.fill_polygon(vert, style)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> std::result::Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<S: plotters_backend::BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> std::result::Result<(u32, u32), DrawingErrorKind<B::ErrorType>> {
        let (_, w, h) = layout(self.font, style.size(), text);
        Ok((w, h))
    }

    fn draw_text<S: plotters_backend::BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> std::result::Result<(), DrawingErrorKind<B::ErrorType>> {
        let color = style.color();
        let (glyphs, w, h) = layout(self.font, style.size(), text);
        let (w, h) = (w as i32, h as i32);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0,
            HPos::Center => -w / 2,
            HPos::Right => -w,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        };
        let transform = style.transform();
        let mut result = Ok(());
        for g in &glyphs {
            let bounds = g.px_bounds();
            g.draw(|x, y, coverage| {
                if result.is_err() || coverage <= 0.0 {
                    return;
                }
                let (tx, ty) = transform.transform(
                    bounds.min.x as i32 + x as i32 + dx,
                    bounds.min.y as i32 + y as i32 + dy,
                );
                let c = BackendColor {
                    alpha: color.alpha * f64::from(coverage.min(1.0)),
                    rgb: color.rgb,
                };
                result = self.inner.draw_pixel((pos.0 + tx, pos.1 + ty), c);
            });
        }
        result
    }
}

fn title_font() -> FontDesc<'static> {
    (FONT_FAMILY, TITLE_FONT).into_font()
}

/// The wrapped title; several answers (`--caption both`) are numbered so they read apart.
fn title_lines(fig: &ExplanationFigure) -> Result<Vec<String>> {
    let paragraphs: Vec<String> = if fig.explanations.len() > 1 {
        (fig.explanations.iter().enumerate())
            .map(|(i, e)| format!("({}) {e}", i + 1))
            .collect()
    } else {
        fig.explanations.clone()
    };
    wrap(
        &paragraphs,
        TITLE_FONT,
        FIGURE_WIDTH - 2 * MARGIN,
        MAX_TITLE_LINES,
    )
}

fn height_for(fig: &ExplanationFigure, title_lines: usize) -> u32 {
    let legend_rows = fig.audios.iter().map(|a| a.events.len()).max().unwrap_or(0) as u32;
    let title_h = MARGIN + title_lines as u32 * TITLE_LINE;
    title_h + MARGIN + HEADER_H + SPEC_H + PROB_H + legend_rows * LEGEND_ROW + MARGIN
}

/// `(width, height)` in pixels of the PNG [`render_explanation_figure`] writes for `fig`.
pub fn figure_size(fig: &ExplanationFigure) -> Result<(u32, u32)> {
    Ok((FIGURE_WIDTH, height_for(fig, title_lines(fig)?.len())))
}

/// Draws `fig` and writes it to `path` as PNG (whatever the extension). The file appears
/// only once complete; an unwritable path is an error naming it.
pub fn render_explanation_figure(path: &Path, fig: &ExplanationFigure) -> Result<()> {
    fig.validate()?;
    let lines = title_lines(fig)?;
    let h = height_for(fig, lines.len());
    render_png(path, h, |root, font| draw(root, fig, &lines, font))
}

type DrawResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;
/// The drawing area every figure is drawn on: an RGB buffer with the bundled font.
type Canvas<'a> = DrawingArea<GlyphBackend<BitMapBackend<'a>>, Shift>;

/// Draws a [`FIGURE_WIDTH`] x `h` figure with `paint` and writes it to `path` as PNG (see
/// [`write_png_atomically`]).
fn render_png(
    path: &Path,
    h: u32,
    paint: impl FnOnce(&Canvas, &'static FontRef<'static>) -> DrawResult<()>,
) -> Result<()> {
    let font = font()?;
    let w = FIGURE_WIDTH;
    // RGB, row-major [h, w, 3].
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let inner = BitMapBackend::with_buffer(&mut rgb, (w, h));
        let root = GlyphBackend { inner, font }.into_drawing_area();
        paint(&root, font).map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    write_png_atomically(path, &rgb, w, h)
}

/// Draws `lines` one under the other, the first's top-left at (`x`, `y`), `line_h` apart.
fn draw_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    lines: &[String],
    style: &TextStyle,
    (x, y): (i32, i32),
    line_h: u32,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    for (i, line) in lines.iter().enumerate() {
        area.draw_text(line, style, (x, y + (i as u32 * line_h) as i32))?;
    }
    Ok(())
}

/// One dB range for all `panels`, so their spectrograms compare directly: from the loudest
/// bin down at most [`DYNAMIC_RANGE_DB`] (NaN, time no window heard, is left out).
fn db_range<'a>(panels: impl Iterator<Item = &'a AudioPanel> + Clone) -> Range<f32> {
    let values = || panels.clone().flat_map(|a| a.logmel.iter().copied());
    let max_db = values().fold(f32::NEG_INFINITY, f32::max);
    let min_db = values()
        .fold(f32::INFINITY, f32::min)
        .max(max_db - DYNAMIC_RANGE_DB);
    min_db..max_db
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    fig: &ExplanationFigure,
    lines: &[String],
    font: &'static FontRef<'static>,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let title_h = MARGIN + lines.len() as u32 * TITLE_LINE;
    let (title, body) = root.split_vertically(title_h);
    let style = TextStyle::from(title_font()).color(&BLACK);
    let at = (MARGIN as i32, MARGIN as i32);
    draw_lines(&title, lines, &style, at, TITLE_LINE)?;
    let db_range = db_range(fig.audios.iter());

    let body = body.margin(MARGIN, MARGIN, MARGIN, MARGIN);
    let n = fig.audios.len();
    let (bw, _) = body.dim_in_pixel();
    let col_w = (bw.saturating_sub(COLUMN_GAP * (n as u32 - 1))) / n as u32;
    let mut rest = body;
    for (i, audio) in fig.audios.iter().enumerate() {
        let (col, right) = rest.split_horizontally(col_w);
        draw_column(root, &col, audio, i, fig.duration_s, &db_range, font)?;
        rest = right.margin(0, 0, COLUMN_GAP, 0);
    }
    Ok(())
}

fn draw_column<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    col: &DrawingArea<DB, Shift>,
    audio: &AudioPanel,
    index: usize,
    duration_s: f32,
    db_range: &Range<f32>,
    font: &'static FontRef<'static>,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let (header, rest) = col.split_vertically(HEADER_H);
    let (spec_area, rest) = rest.split_vertically(SPEC_H);
    let (prob_area, legend_area) = rest.split_vertically(PROB_H);
    draw_header(&header, index, &audio.name, font)?;
    draw_spectrogram(root, &spec_area, audio, duration_s, db_range)?;

    // Event probabilities on the same time axis.
    let mut prob = ChartBuilder::on(&prob_area)
        .margin_right(COLORBAR_AREA)
        .margin_top(MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(0f32..duration_s, 0f32..1f32)?;
    prob.configure_mesh()
        .x_labels(TIME_TICKS)
        .y_labels(TIME_TICKS / 2 + 1)
        .light_line_style(WHITE)
        .x_label_formatter(&|t| tick(*t))
        .y_label_formatter(&|p| format!("{p:.1}"))
        .x_desc("Time (s)")
        .y_desc("Probability")
        .label_style((FONT_FAMILY, LABEL_FONT))
        .axis_desc_style((FONT_FAMILY, AXIS_DESC_FONT))
        .draw()?;
    for (e, color) in audio.events.iter().zip(EVENT_COLORS) {
        let sec = duration_s / e.framewise.len() as f32;
        let points = e
            .framewise
            .iter()
            .enumerate()
            .map(|(f, &p)| (f as f32 * sec, p.clamp(0.0, 1.0)));
        prob.draw_series(LineSeries::new(points, color.stroke_width(LINE_WIDTH)))?;
    }

    // Legend under the plot, never over the curves.
    let text = TextStyle::from((FONT_FAMILY, LABEL_FONT).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (k, (e, color)) in audio.events.iter().zip(EVENT_COLORS).enumerate() {
        let y = (k as u32 * LEGEND_ROW + LEGEND_ROW / 2) as i32;
        let x = Y_LABEL_AREA as i32;
        legend_area.draw(&PathElement::new(
            vec![(x, y), (x + LEGEND_LINE_W, y)],
            color.stroke_width(LINE_WIDTH),
        ))?;
        legend_area.draw_text(
            &format!("{} (clip {:.2})", e.label, e.clip_probability),
            &text,
            (x + LEGEND_LINE_W + COLORBAR_GAP, y),
        )?;
    }
    Ok(())
}

/// "Audio N: name" over a plot's y labels, the name shortened from the left to fit above the
/// plot (the colour bar's room stays clear).
fn draw_header<DB: DrawingBackend>(
    header: &DrawingArea<DB, Shift>,
    index: usize,
    name: &str,
    font: &'static FontRef<'static>,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let (header_w, _) = header.dim_in_pixel();
    let prefix = format!("Audio {}: ", index + 1);
    let room = header_w
        .saturating_sub(Y_LABEL_AREA + COLORBAR_AREA)
        .saturating_sub(text_width(font, HEADER_FONT, &prefix));
    header.draw_text(
        &format!("{prefix}{}", elide_left(font, HEADER_FONT, name, room)),
        &TextStyle::from((FONT_FAMILY, HEADER_FONT).into_font()).color(&BLACK),
        (Y_LABEL_AREA as i32, 0),
    )?;
    Ok(())
}

/// The spectrogram chart on `area`: time 0..`duration_s` on x (s), mel bin on y (low
/// frequencies at the bottom), the log-mel's frames spread evenly over the time axis (a NaN
/// value, time no window heard, in [`GAP_RGB`]), with its colour bar on the right. Returns
/// the plotting area's pixel columns and rows.
fn draw_spectrogram<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    audio: &AudioPanel,
    duration_s: f32,
    db_range: &Range<f32>,
) -> DrawResult<(Range<i32>, Range<i32>)>
where
    DB::ErrorType: 'static,
{
    let bins = audio.mel_bins as f32;
    let mut spec = ChartBuilder::on(area)
        .margin_right(COLORBAR_AREA)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(0f32..duration_s, 0f32..bins)?;
    spec.configure_mesh()
        .disable_mesh()
        .x_labels(TIME_TICKS)
        .x_label_formatter(&|t| tick(*t))
        .y_label_formatter(&|m| tick(*m))
        .x_desc("Time (s)")
        .y_desc("Mel bin")
        .label_style((FONT_FAMILY, LABEL_FONT))
        .axis_desc_style((FONT_FAMILY, AXIS_DESC_FONT))
        .draw()?;
    let (xs, ys) = spec.plotting_area().get_pixel_range();
    let (pw, ph) = ((xs.end - xs.start) as f32, (ys.end - ys.start) as f32);
    for py in ys.clone() {
        // Row 0 at the top is the highest mel bin.
        let frac = (ys.end - 1 - py) as f32 / ph;
        let m = ((frac * bins) as usize).min(audio.mel_bins - 1);
        for px in xs.clone() {
            let frac = (px - xs.start) as f32 / pw;
            let t = ((frac * audio.mel_frames as f32) as usize).min(audio.mel_frames - 1);
            let v = audio.logmel[t * audio.mel_bins + m];
            if v.is_nan() {
                root.draw_pixel((px, py), &GAP_RGB)?;
            } else {
                let c = ViridisRGB::get_color_normalized(v, db_range.start, db_range.end);
                root.draw_pixel((px, py), &c)?;
            }
        }
    }
    draw_colorbar(root, xs.end + COLORBAR_GAP, &ys, db_range)?;
    Ok((xs, ys))
}

/// Vertical colour bar at pixel column `x0` spanning rows `ys`, labelled in dB.
fn draw_colorbar<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    x0: i32,
    ys: &Range<i32>,
    db: &Range<f32>,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let h = (ys.end - ys.start - 1).max(1) as f32;
    for py in ys.clone() {
        let v = db.end - (py - ys.start) as f32 / h * (db.end - db.start);
        let c = ViridisRGB::get_color_normalized(v, db.start, db.end);
        for px in x0..x0 + COLORBAR_W {
            root.draw_pixel((px, py), &c)?;
        }
    }
    root.draw(&Rectangle::new(
        [(x0, ys.start), (x0 + COLORBAR_W, ys.end - 1)],
        BLACK.stroke_width(1),
    ))?;
    let style = TextStyle::from((FONT_FAMILY, LABEL_FONT).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for k in 0..COLORBAR_TICKS {
        let frac = k as f32 / (COLORBAR_TICKS - 1) as f32;
        let y = ys.start + (frac * h) as i32;
        let v = db.end - frac * (db.end - db.start);
        root.draw_text(
            &format!("{} dB", tick(v.round())),
            &style,
            (x0 + COLORBAR_W + COLORBAR_GAP / 2, y),
        )?;
    }
    Ok(())
}

/// An axis tick value: whole numbers without decimals (and never "-0"), others with one.
fn tick(v: f32) -> String {
    if v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        format!("{v:.1}")
    }
}

/// Time columns of a [`WindowFigure`]'s spectrograms: one per pixel column of its plotting
/// area (the figure's width less the margins, the y labels and the colour bar's room).
pub const TIMELINE_COLUMNS: usize =
    (FIGURE_WIDTH - 2 * MARGIN - Y_LABEL_AREA - COLORBAR_AREA) as usize;
/// Explanation lines a [`WindowFigure`] lists at most (an hour of 10 s windows would make a
/// figure too tall to read or hold); the last then ends with an ellipsis.
pub const MAX_LIST_LINES: usize = 200;
/// Bins a [`LogMelTimeline`] holds at most: twice the columns it is drawn in.
const TIMELINE_BINS: usize = 2 * TIMELINE_COLUMNS;
/// The strip above each whole-file spectrogram that numbers its windows.
const WINDOW_LABEL_H: u32 = 26;
const WINDOW_TICK_H: i32 = 8;
const LIST_FONT: f64 = 18.0;
const LIST_LINE: u32 = 24;
/// Window boundaries on the spectrograms: white, which the viridis colour map never is.
const BOUNDARY_RGB: RGBColor = WHITE;
/// Spectrogram time that no window heard (a hop longer than the window).
const GAP_RGB: RGBColor = RGBColor(200, 200, 200);

/// `explain --window --plot`: each whole file's log-mel spectrogram in a row of its own (its
/// own time axis, so files of different lengths both fill the width), the windows that were
/// explained marked by vertical lines at their boundaries and numbered by the pairs that hold
/// them, and the explanations listed below, one numbered paragraph per pair.
#[derive(Debug, Clone)]
pub struct WindowFigure {
    pub rows: Vec<TimelineRow>,
    /// One paragraph per window pair, in pair order (the caller numbers them as the labels).
    pub explanations: Vec<String>,
}

/// One file's row of a [`WindowFigure`].
#[derive(Debug, Clone)]
pub struct TimelineRow {
    /// The whole file's log-mel, its frames spread evenly over 0..`duration_s` (from
    /// [`LogMelTimeline::finish`]; NaN where no window heard the file); `events` is not drawn.
    pub panel: AudioPanel,
    pub duration_s: f64,
    /// The windows of this file that were explained, in time order.
    pub windows: Vec<WindowMark>,
}

/// One explained window: where it lies in its file and its label (the pair number or range).
#[derive(Debug, Clone)]
pub struct WindowMark {
    pub start_s: f64,
    pub end_s: f64,
    pub label: String,
}

/// Height in pixels of a [`WindowFigure`] of `rows` rows listing `lines` lines: per row a
/// header, a label strip and a spectrogram, rows [`MARGIN`] apart; then the list.
fn window_height(rows: usize, lines: usize) -> u32 {
    let rows = rows as u32;
    let row_h = HEADER_H + WINDOW_LABEL_H + SPEC_H;
    MARGIN
        + rows * row_h
        + rows.saturating_sub(1) * MARGIN
        + MARGIN
        + lines as u32 * LIST_LINE
        + MARGIN
}

/// Pixel column of time `t_s` on a time axis of `duration_s` seconds drawn over columns `xs`:
/// the column whose span of time holds it (the axis' end on its last column).
pub fn time_column(t_s: f64, duration_s: f64, xs: &Range<i32>) -> i32 {
    let pw = f64::from(xs.end - xs.start);
    let x = xs.start + (t_s / duration_s * pw).floor() as i32;
    x.clamp(xs.start, xs.end - 1)
}

impl WindowFigure {
    fn list_lines(&self) -> Result<Vec<String>> {
        wrap(
            &self.explanations,
            LIST_FONT,
            FIGURE_WIDTH - 2 * MARGIN,
            MAX_LIST_LINES,
        )
    }

    /// Checks the data is drawable; every error names the audio and what is wrong.
    fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(AdiffError::Invalid(format!("figure: {msg}")));
        if self.rows.is_empty() {
            return bad("no audio to draw".into());
        }
        for r in &self.rows {
            let a = &r.panel;
            if !(r.duration_s.is_finite() && r.duration_s > 0.0) {
                return bad(format!(
                    "{}: duration {} s is not positive",
                    a.name, r.duration_s
                ));
            }
            if a.mel_frames == 0 || a.mel_bins == 0 || a.logmel.len() != a.mel_frames * a.mel_bins {
                return bad(format!(
                    "{}: log-mel has {} values, not {} x {}",
                    a.name,
                    a.logmel.len(),
                    a.mel_frames,
                    a.mel_bins
                ));
            }
            if a.logmel.iter().any(|v| v.is_infinite()) || a.logmel.iter().all(|v| v.is_nan()) {
                return bad(format!("{}: log-mel is infinite or empty", a.name));
            }
            if let Some(w) = r
                .windows
                .iter()
                .find(|w| !(w.start_s.is_finite() && w.end_s.is_finite() && w.start_s <= w.end_s))
            {
                return bad(format!(
                    "{}: window {}-{} s is not a span of time",
                    a.name, w.start_s, w.end_s
                ));
            }
        }
        Ok(())
    }
}

/// `(width, height)` in pixels of the PNG [`render_window_figure`] writes for `fig`.
pub fn window_figure_size(fig: &WindowFigure) -> Result<(u32, u32)> {
    Ok((
        FIGURE_WIDTH,
        window_height(fig.rows.len(), fig.list_lines()?.len()),
    ))
}

/// Draws `fig` and writes it to `path` as PNG, as [`render_explanation_figure`] does.
pub fn render_window_figure(path: &Path, fig: &WindowFigure) -> Result<()> {
    fig.validate()?;
    let lines = fig.list_lines()?;
    let h = window_height(fig.rows.len(), lines.len());
    render_png(path, h, |root, font| draw_windows(root, fig, &lines, font))
}

fn draw_windows<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    fig: &WindowFigure,
    lines: &[String],
    font: &'static FontRef<'static>,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let db_range = db_range(fig.rows.iter().map(|r| &r.panel));
    let mut rest = root.margin(MARGIN, 0, MARGIN, MARGIN);
    for (i, row) in fig.rows.iter().enumerate() {
        if i > 0 {
            rest = rest.margin(MARGIN, 0, 0, 0);
        }
        let (header, below) = rest.split_vertically(HEADER_H);
        let (strip, below) = below.split_vertically(WINDOW_LABEL_H);
        let (spec_area, below) = below.split_vertically(SPEC_H);
        rest = below;
        draw_header(&header, i, &row.panel.name, font)?;
        let duration = row.duration_s as f32;
        let (xs, ys) = draw_spectrogram(root, &spec_area, &row.panel, duration, &db_range)?;
        draw_window_marks(root, &strip, row, &xs, &ys)?;
    }
    let style = TextStyle::from((FONT_FAMILY, LIST_FONT).into_font()).color(&BLACK);
    draw_lines(&rest, lines, &style, (0, MARGIN as i32), LIST_LINE)
}

/// A row's window boundaries as white lines over its spectrogram (plotting area `xs` x `ys`),
/// and in the label strip above a tick at each window's start with its label beside it where
/// there is room (a label that would run into the one before it or past the axis is left out).
fn draw_window_marks<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    strip: &DrawingArea<DB, Shift>,
    row: &TimelineRow,
    xs: &Range<i32>,
    ys: &Range<i32>,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let column = |t: f64| time_column(t, row.duration_s, xs);
    let mut lines: Vec<i32> = (row.windows.iter())
        .flat_map(|w| [column(w.start_s), column(w.end_s)])
        .collect();
    lines.sort_unstable();
    lines.dedup();
    for &x in &lines {
        root.draw(&PathElement::new(
            vec![(x, ys.start), (x, ys.end - 1)],
            BOUNDARY_RGB.stroke_width(1),
        ))?;
    }
    let (_, strip_y) = strip.get_base_pixel();
    let bottom = strip_y + WINDOW_LABEL_H as i32 - 1;
    let style = TextStyle::from((FONT_FAMILY, LABEL_FONT).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let mut free_from = i32::MIN;
    for w in &row.windows {
        let x = column(w.start_s);
        root.draw(&PathElement::new(
            vec![(x, bottom - WINDOW_TICK_H), (x, bottom)],
            BLACK.stroke_width(1),
        ))?;
        let (tw, _) = root.estimate_text_size(&w.label, &style)?;
        let at = x + COLORBAR_GAP / 3;
        if at >= free_from && at + tw as i32 <= xs.end {
            root.draw_text(&w.label, &style, (at, strip_y + WINDOW_LABEL_H as i32 / 2))?;
            free_from = at + tw as i32 + COLORBAR_GAP;
        }
    }
    Ok(())
}

/// A whole file's log-mel gathered window by window for a [`WindowFigure`], in memory that
/// does not grow with the file. The file's time is cut into slots of one STFT hop, the frame
/// centred on each; a slot is taken once, from the first window that holds it (so overlapping
/// windows add nothing twice, and the repeat that fills a short window's clip is never
/// taken), except that a window's last frames, whose FFT reaches past the window's end into
/// the repeat, give way to the next window when it holds them whole. Slots are averaged (in
/// dB) into at most twice [`TIMELINE_COLUMNS`] bins, two neighbours merging whenever the file
/// outgrows them.
#[derive(Debug, Clone)]
pub struct LogMelTimeline {
    mels: usize,
    frame_s: f64,
    /// Half the FFT window, in seconds: how far a frame reaches each side of its centre.
    edge_s: f64,
    slots_per_bin: u64,
    /// Per bin: the sum of its slots' dB per mel bin (`[bins, mels]`), and its slot count.
    sums: Vec<f64>,
    counts: Vec<u32>,
    next_slot: u64,
    /// The last window's frames that reach past its end, held back (slot order).
    pending: Vec<(u64, Vec<f32>)>,
}

impl LogMelTimeline {
    /// For log-mels of `mels` bins with one frame every `frame_s` seconds, each frame's FFT
    /// reaching `edge_s` seconds either side of its centre.
    pub fn new(mels: usize, frame_s: f64, edge_s: f64) -> Self {
        Self {
            mels,
            frame_s,
            edge_s,
            slots_per_bin: 1,
            sums: Vec::new(),
            counts: Vec::new(),
            next_slot: 0,
            pending: Vec::new(),
        }
    }

    /// Adds the window `[start_s, end_s)` of the file, whose clip (the window, repeated to the
    /// clip's length when shorter) has the log-mel `logmel` (`[frames, mels]`, row-major).
    /// Windows come in time order.
    pub fn push(&mut self, start_s: f64, end_s: f64, logmel: &[f32]) -> Result<()> {
        if self.mels == 0 || !logmel.len().is_multiple_of(self.mels) {
            return Err(AdiffError::Invalid(format!(
                "figure: a log-mel of {} values is not frames of {} mel bins",
                logmel.len(),
                self.mels
            )));
        }
        let frames = logmel.len() / self.mels;
        let len = end_s - start_s;
        // The frames centred inside the window (the rest of the clip is its repeat), and of
        // those the ones whose FFT stays inside it.
        let real = ((len / self.frame_s - 1e-6).ceil().max(1.0) as usize).min(frames);
        let whole = ((len - self.edge_s) / self.frame_s + 1e-6).floor() + 1.0;
        let whole = (whole.max(0.0) as usize).min(real);
        let first = (start_s / self.frame_s).round() as u64;
        let mut held = std::mem::take(&mut self.pending).into_iter().peekable();
        for (f, row) in logmel.chunks_exact(self.mels).take(real).enumerate() {
            let slot = first + f as u64;
            while let Some((s, r)) = held.next_if(|(s, _)| *s < slot) {
                self.add(s, &r);
            }
            let held_here = held.next_if(|(s, _)| *s == slot);
            if slot < self.next_slot {
                continue;
            }
            match held_here {
                _ if f < whole => self.add(slot, row),
                Some(h) => self.pending.push(h),
                None => self.pending.push((slot, row.to_vec())),
            }
        }
        self.pending.extend(held);
        Ok(())
    }

    /// Adds the frame `row` at `slot` unless an earlier one holds it.
    fn add(&mut self, slot: u64, row: &[f32]) {
        if slot < self.next_slot {
            return;
        }
        self.next_slot = slot + 1;
        while slot / self.slots_per_bin >= TIMELINE_BINS as u64 {
            self.merge();
        }
        let bin = (slot / self.slots_per_bin) as usize;
        if self.counts.len() <= bin {
            self.counts.resize(bin + 1, 0);
            self.sums.resize((bin + 1) * self.mels, 0.0);
        }
        self.counts[bin] += 1;
        let sums = &mut self.sums[bin * self.mels..(bin + 1) * self.mels];
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += f64::from(v);
        }
    }

    /// Halves the time resolution: bins 2k and 2k + 1 become bin k.
    fn merge(&mut self) {
        let (m, bins) = (self.mels, self.counts.len());
        for k in 0..bins.div_ceil(2) {
            let (a, b) = (2 * k, (2 * k + 1).min(bins));
            let count = self.counts[a] + self.counts.get(b).copied().unwrap_or(0);
            self.counts[k] = count;
            for j in 0..m {
                let v = self.sums[a * m + j] + self.sums.get(b * m + j).copied().unwrap_or(0.0);
                self.sums[k * m + j] = v;
            }
        }
        self.counts.truncate(bins.div_ceil(2));
        self.sums.truncate(bins.div_ceil(2) * m);
        self.slots_per_bin *= 2;
    }

    /// The file's panel, named `name`: [`TIMELINE_COLUMNS`] columns evenly over
    /// 0..`duration_s`, each the mean of the bins centred in it (or, when none is, of the bin
    /// nearest its centre, if that lies within a bin's width); NaN where no window heard it.
    pub fn finish(mut self, name: String, duration_s: f64) -> AudioPanel {
        for (slot, row) in std::mem::take(&mut self.pending) {
            self.add(slot, &row);
        }
        let (m, bins) = (self.mels, self.counts.len());
        let spb = self.slots_per_bin as f64;
        let bin_s = spb * self.frame_s;
        // Bin b's frames are centred from b * spb to (b + 1) * spb - 1 slots.
        let centre = |b: usize| (b as f64 * spb + (spb - 1.0) / 2.0) * self.frame_s;
        let first_at = |t: f64| {
            ((t / self.frame_s - (spb - 1.0) / 2.0) / spb)
                .ceil()
                .clamp(0.0, bins as f64) as usize
        };
        let cols = TIMELINE_COLUMNS;
        let mut logmel = vec![f32::NAN; cols * m];
        for (c, out) in logmel.chunks_exact_mut(m).enumerate() {
            let t0 = c as f64 * duration_s / cols as f64;
            let t1 = (c + 1) as f64 * duration_s / cols as f64;
            let mut take: Vec<usize> = (first_at(t0)..first_at(t1)).collect();
            if take.is_empty() && bins > 0 {
                let mid = (t0 + t1) / 2.0;
                let b = (((mid / self.frame_s - (spb - 1.0) / 2.0) / spb)
                    .round()
                    .max(0.0) as usize)
                    .min(bins - 1);
                if (centre(b) - mid).abs() <= bin_s {
                    take.push(b);
                }
            }
            let n: u32 = take.iter().map(|&b| self.counts[b]).sum();
            if n == 0 {
                continue;
            }
            for (j, o) in out.iter_mut().enumerate() {
                let sum: f64 = take.iter().map(|&b| self.sums[b * m + j]).sum();
                *o = (sum / f64::from(n)) as f32;
            }
        }
        AudioPanel {
            name,
            logmel,
            mel_frames: cols,
            mel_bins: m,
            events: Vec::new(),
        }
    }
}

/// Writes the PNG to a temp file beside `path`, then renames it into place.
fn write_png_atomically(path: &Path, rgb: &[u8], w: u32, h: u32) -> Result<()> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        AdiffError::Invalid(format!("{}: cannot {what} the figure: {e}", path.display()))
    };
    let name = path
        .file_name()
        .ok_or_else(|| fail("write", &"not a file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let mut bytes = Vec::new();
        let mut enc = png::Encoder::new(&mut bytes, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(rgb)?;
        writer.finish()?;
        std::fs::write(&tmp, &bytes)?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail("write", &e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail("write", &e)
    })
}
