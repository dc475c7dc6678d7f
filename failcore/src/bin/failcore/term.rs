//! Terminal output shared by every command: escaping of untrusted text, colour, width, tables.
//!
//! Text that comes from a trace, a tool or a server (tool names, reasons, errors, outputs, program
//! names) passes through [`safe`] before it reaches a terminal, so a hostile trace cannot move the
//! cursor, recolour the screen or hide text. Colour goes only through [`Out::paint`], which escapes
//! its text first. `--json` output never passes through here: it stays exact.

use anstyle::{AnsiColor, Style};
use std::borrow::Cow;
use unicode_width::UnicodeWidthStr;

/// The styles the commands use.
pub const OK: Style = AnsiColor::Green.on_default();
pub const BAD: Style = AnsiColor::Red.on_default();
pub const BAD_BOLD: Style = AnsiColor::Red.on_default().bold();
pub const WARN: Style = AnsiColor::Yellow.on_default();
pub const INFO: Style = AnsiColor::Cyan.on_default();
pub const DIVERGED: Style = AnsiColor::Magenta.on_default();
pub const DIM: Style = Style::new().dimmed();
pub const HEAD: Style = Style::new().bold();
pub const PLAIN: Style = Style::new();

/// `s` with every control character written out as an escape (`\n`, `\t`, `\u{1b}`), and the
/// bidirectional overrides too, so it shows as text on one line and never acts on the terminal.
pub fn safe(s: &str) -> Cow<'_, str> {
    failcore::proxy_common::printable(s)
}

/// The columns `s` takes on a terminal.
pub fn width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// `s` cut to at most `max` columns, ending in `…` when cut.
pub fn fit(s: &str, max: usize) -> Cow<'_, str> {
    if width(s) <= max {
        return Cow::Borrowed(s);
    }
    if max == 0 {
        return Cow::Borrowed("");
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w > max - 1 {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    Cow::Owned(out)
}

/// How a command writes to standard output: whether it may colour, and how wide the terminal is.
#[derive(Clone, Copy, Debug)]
pub struct Out {
    pub colour: bool,
    /// The width to fit tables into; `None` (a pipe, with no `COLUMNS`) leaves lines whole.
    pub width: Option<usize>,
}

impl Out {
    /// Colour as `anstream` decides it (a terminal, and neither `NO_COLOR` nor `CLICOLOR=0`;
    /// `CLICOLOR_FORCE` forces it); width from `COLUMNS`, else the terminal's.
    pub fn stdout() -> Out {
        let colour =
            anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never;
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.trim().parse::<usize>().ok())
            .filter(|w| *w > 0)
            .or_else(|| {
                console::Term::stdout()
                    .size_checked()
                    .map(|(_, cols)| usize::from(cols))
            });
        Out { colour, width }
    }

    /// `text`, escaped and cut to the width less `used` columns (what is already on the line).
    pub fn fit(&self, used: usize, text: &str) -> String {
        let text = safe(text);
        match self.width {
            Some(w) => fit(&text, w.saturating_sub(used)).into_owned(),
            None => text.into_owned(),
        }
    }

    /// `text`, escaped, in `style` when colour is on.
    pub fn paint(&self, style: Style, text: &str) -> String {
        let text = safe(text);
        if self.colour && style != PLAIN {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.into_owned()
        }
    }
}

/// Which side of its column a cell keeps to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// One column of a [`Table`].
#[derive(Clone, Copy)]
pub struct Col {
    pub header: &'static str,
    pub align: Align,
    /// The fewest columns it keeps when the table must shrink; `None`: it never shrinks.
    pub min: Option<usize>,
    /// Columns of a lower rank give way before those of a higher one.
    pub rank: u8,
    /// When the table still does not fit once every column has shrunk, it may be left out: those with a
    /// lower number first. `None`: it is always shown.
    pub hide: Option<u8>,
}

impl Col {
    pub const fn left(header: &'static str) -> Col {
        Col {
            header,
            align: Align::Left,
            min: None,
            rank: 1,
            hide: None,
        }
    }
    pub const fn right(header: &'static str) -> Col {
        Col {
            header,
            align: Align::Right,
            min: None,
            rank: 1,
            hide: None,
        }
    }
    /// The column may be cut (with an ellipsis) down to `min` columns to fit the terminal.
    pub const fn shrink(mut self, min: usize) -> Col {
        self.min = Some(min);
        self
    }
    /// The column may be left out when the table cannot fit otherwise (`order` 0 first).
    pub const fn hide_at(mut self, order: u8) -> Col {
        self.hide = Some(order);
        self
    }
    /// Like [`Col::shrink`], giving way before (`rank` 0) or after (2 and up) the others.
    pub const fn shrink_at(mut self, rank: u8, min: usize) -> Col {
        self.min = Some(min);
        self.rank = rank;
        self
    }
}

/// A cell: text (escaped when it is rendered) and its style.
pub struct Cell {
    pub text: String,
    pub style: Style,
}

impl Cell {
    pub fn new(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            style: PLAIN,
        }
    }
    pub fn styled(text: impl Into<String>, style: Style) -> Cell {
        Cell {
            text: text.into(),
            style,
        }
    }
}

impl<T: Into<String>> From<T> for Cell {
    fn from(t: T) -> Cell {
        Cell::new(t)
    }
}

/// Column widths that fit `budget`: each column's natural width, with the shrinkable ones cut down
/// to their minimum until the line fits or nothing more can give: lower ranks first, and within a
/// rank the widest first.
pub fn fit_widths(
    natural: &[usize],
    cols: &[Col],
    gap: usize,
    budget: Option<usize>,
) -> Vec<usize> {
    let mut w = natural.to_vec();
    let Some(budget) = budget else { return w };
    let total = |w: &[usize]| w.iter().sum::<usize>() + gap * w.len().saturating_sub(1);
    let mut over = total(&w).saturating_sub(budget);
    let mut ranks: Vec<u8> = cols
        .iter()
        .filter(|c| c.min.is_some())
        .map(|c| c.rank)
        .collect();
    ranks.sort_unstable();
    ranks.dedup();
    for rank in ranks {
        let can =
            |i: usize, w: &[usize]| cols[i].rank == rank && cols[i].min.is_some_and(|m| w[i] > m);
        while over > 0 {
            let widest = (0..w.len())
                .filter(|&i| can(i, &w))
                .max_by_key(|&i| (w[i], std::cmp::Reverse(i)));
            let Some(i) = widest else { break };
            // Take from the widest down to the next widest in one go (one at a time between equals).
            let next = (0..w.len())
                .filter(|&j| {
                    j != i && cols[j].rank == rank && cols[j].min.is_some() && w[j] <= w[i]
                })
                .map(|j| w[j])
                .max()
                .unwrap_or(0)
                .max(cols[i].min.unwrap_or(0));
            let cut = (w[i] - next).clamp(1, over);
            w[i] -= cut;
            over -= cut;
        }
    }
    w
}

/// A table of rows, sized to the terminal when it is shown.
pub struct Table {
    cols: Vec<Col>,
    rows: Vec<Vec<Cell>>,
    /// Lines printed under a row (a problem with that run), indented and cut to the width.
    notes: Vec<Option<Cell>>,
}

/// The blank columns between two columns.
pub const GAP: usize = 2;

impl Table {
    pub fn new(cols: &[Col]) -> Table {
        Table {
            cols: cols.to_vec(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        debug_assert_eq!(cells.len(), self.cols.len());
        self.rows.push(cells);
        self.notes.push(None);
    }

    /// A line shown under the last row.
    pub fn note(&mut self, note: Cell) {
        if let Some(last) = self.notes.last_mut() {
            *last = Some(note);
        }
    }

    /// The columns shown and their widths: every column shrunk as it may, and if the line is still too
    /// wide, the hideable columns left out one by one until it fits.
    fn layout(&self, out: &Out) -> (Vec<usize>, Vec<usize>) {
        let natural: Vec<usize> = self
            .cols
            .iter()
            .enumerate()
            .map(|(i, c)| {
                self.rows
                    .iter()
                    .map(|r| width(&safe(&r[i].text)))
                    .chain([width(c.header)])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut shown: Vec<usize> = (0..self.cols.len()).collect();
        loop {
            let cols: Vec<Col> = shown.iter().map(|&i| self.cols[i]).collect();
            let wanted: Vec<usize> = shown.iter().map(|&i| natural[i]).collect();
            let widths = fit_widths(&wanted, &cols, GAP, out.width);
            let used = widths.iter().sum::<usize>() + GAP * widths.len().saturating_sub(1);
            let next = shown
                .iter()
                .enumerate()
                .filter_map(|(at, &i)| Some((self.cols[i].hide?, at)))
                .min();
            match (out.width, next) {
                (Some(budget), Some((_, at))) if used > budget => {
                    shown.remove(at);
                }
                _ => return (shown, widths),
            }
        }
    }

    /// The table's lines, headers first, fitted to `out`'s width.
    pub fn render(&self, out: &Out) -> Vec<String> {
        let (shown, widths) = self.layout(out);
        let cols: Vec<Col> = shown.iter().map(|&i| self.cols[i]).collect();
        let pick = |row: &[Cell]| -> Vec<Cell> {
            shown
                .iter()
                .map(|&i| Cell::styled(row[i].text.clone(), row[i].style))
                .collect()
        };
        let mut lines = Vec::with_capacity(self.rows.len() + 1);
        let header: Vec<Cell> = cols.iter().map(|c| Cell::styled(c.header, HEAD)).collect();
        lines.push(line(out, &cols, &widths, &header));
        for (row, note) in self.rows.iter().zip(&self.notes) {
            lines.push(line(out, &cols, &widths, &pick(row)));
            if let Some(n) = note {
                let text = safe(&n.text);
                let text = match out.width {
                    Some(w) => fit(&text, w.saturating_sub(4)).into_owned(),
                    None => text.into_owned(),
                };
                lines.push(format!("    {}", out.paint(n.style, &text)));
            }
        }
        lines
    }

    pub fn print(&self, out: &Out) {
        for l in self.render(out) {
            println!("{l}");
        }
    }
}

/// One line of cells in the given widths; the last column is not padded.
pub fn line(out: &Out, cols: &[Col], widths: &[usize], cells: &[Cell]) -> String {
    let mut s = String::new();
    let last = cells.len().saturating_sub(1);
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            s.push_str(&" ".repeat(GAP));
        }
        let text = safe(&cell.text);
        // With no width to fit (a pipe), nothing is cut: columns only align.
        let text = match out.width {
            Some(_) => fit(&text, widths[i]),
            None => text,
        };
        let pad = || " ".repeat(widths[i].saturating_sub(width(&text)));
        let painted = out.paint(cell.style, &text);
        match cols[i].align {
            Align::Right => {
                s.push_str(&pad());
                s.push_str(&painted);
            }
            Align::Left => {
                s.push_str(&painted);
                if i != last {
                    s.push_str(&pad());
                }
            }
        }
    }
    // An empty last cell leaves no trailing blanks.
    s.truncate(s.trim_end_matches(' ').len());
    s
}

/// A step's status in plain words, with its colour.
pub fn status_word(st: Option<failcore::store::Status>) -> (&'static str, Style) {
    use failcore::store::Status;
    match st {
        Some(Status::Ok) => ("ok", OK),
        Some(Status::Replayed) => ("replayed", INFO),
        Some(Status::Blocked) => ("BLOCKED", BAD_BOLD),
        Some(Status::Failed) => ("failed", BAD),
        Some(Status::Panicked) => ("panicked", BAD),
        Some(Status::Cancelled) => ("cancelled", WARN),
        None => ("in flight", WARN),
    }
}

/// A run's ending in plain words.
pub fn run_status_word(st: Option<failcore::RunStatus>) -> (&'static str, Style) {
    match st {
        Some(failcore::RunStatus::Ok) => ("ok", OK),
        Some(failcore::RunStatus::Failed) => ("failed", BAD),
        None => ("incomplete", WARN),
    }
}

/// A policy decision in plain words.
pub fn outcome_word(o: failcore::store::DecisionOutcome) -> &'static str {
    use failcore::store::DecisionOutcome;
    match o {
        DecisionOutcome::Allow => "allowed",
        DecisionOutcome::Deny => "blocked",
        DecisionOutcome::Approved => "approved on request",
        DecisionOutcome::Refused => "refused on request",
    }
}

/// How a run was started, in plain words.
pub fn mode_words(mode: failcore::store::Mode, resumed_from: Option<&str>) -> String {
    use failcore::store::Mode;
    let from = resumed_from
        .map(|r| format!(" {}", safe(r)))
        .unwrap_or_default();
    match mode {
        Mode::Record => "recording".into(),
        Mode::Resume => format!("resuming{from}"),
        Mode::Offline => format!("offline, replaying{from}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_acts_on_a_terminal() {
        assert_eq!(safe("plain ünïcode"), "plain ünïcode");
        assert_eq!(safe("nope\u{1b}[41mX"), "nope\\u{1b}[41mX");
        assert_eq!(safe("a\nb\tc\r"), "a\\nb\\tc\\r");
        assert_eq!(safe("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(safe("\u{7f}"), "\\u{7f}");
        assert_eq!(safe("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(safe("\u{7}\u{8}"), "\\u{7}\\u{8}");
    }

    #[test]
    fn fits_with_an_ellipsis() {
        assert_eq!(fit("list_allowed_directories", 10), "list_allo…");
        assert_eq!(fit("short", 10), "short");
        assert_eq!(width(&fit("日本語のツール", 7)), 7);
        assert_eq!(fit("abc", 0), "");
    }

    #[test]
    fn shrinks_the_widest_shrinkable_column() {
        let cols = [
            Col::left("a"),
            Col::left("b").shrink(5),
            Col::left("c").shrink(5),
        ];
        assert_eq!(fit_widths(&[10, 30, 20], &cols, 2, Some(50)), [10, 18, 18]);
        assert_eq!(fit_widths(&[10, 30, 20], &cols, 2, Some(10)), [10, 5, 5]);
        assert_eq!(fit_widths(&[10, 30, 20], &cols, 2, None), [10, 30, 20]);
        // A lower rank gives way first, all the way to its minimum.
        let cols = [Col::left("a").shrink_at(0, 5), Col::left("b").shrink(5)];
        assert_eq!(fit_widths(&[20, 30], &cols, 2, Some(40)), [8, 30]);
        assert_eq!(fit_widths(&[20, 30], &cols, 2, Some(30)), [5, 23]);
    }
}
