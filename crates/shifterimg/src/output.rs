//! What the user sees: the images table, pull progress, sizes and times.

use std::io::{self, Write};
use std::time::{Duration, UNIX_EPOCH};

use shifter_api::{ImageRecord, ImageStatus};

/// How many hex digits of an id the table shows.
pub const ID_PREFIX: usize = 12;

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// UTC, second precision; `-` for "never".
pub fn format_time(epoch_secs: i64) -> String {
    match u64::try_from(epoch_secs) {
        Ok(s) if s > 0 => {
            let t = UNIX_EPOCH + Duration::from_secs(s);
            humantime::format_rfc3339_seconds(t)
                .to_string()
                .trim_end_matches('Z')
                .to_owned()
        }
        _ => "-".to_owned(),
    }
}

/// Tags as users type them: Docker Hub's registry and `library/` are implied.
pub fn short_tag(itype: &str, tag: &str) -> String {
    if itype != "docker" {
        return tag.to_owned();
    }
    tag.strip_prefix("docker.io/library/")
        .or_else(|| tag.strip_prefix("docker.io/"))
        .unwrap_or(tag)
        .to_owned()
}

fn id_prefix(id: &str) -> &str {
    id.get(..ID_PREFIX).unwrap_or(id)
}

/// One line per tag, columns aligned, sorted by tag: system, type, status, id
/// prefix, pulled time, tag (the order Shifter users know).
pub fn images_table(records: &[ImageRecord]) -> String {
    let mut rows: Vec<[String; 6]> = Vec::new();
    for r in records {
        let tags: Vec<String> = if r.tag.is_empty() {
            vec!["-".to_owned()]
        } else {
            r.tag
                .iter()
                .map(|t| {
                    let tag = short_tag(&r.itype, t);
                    // Shown beside the shared tag of the same name.
                    match (r.private_copy, r.owner) {
                        (true, Some(uid)) => format!("{tag} (private copy of uid {uid})"),
                        (true, None) => format!("{tag} (private copy)"),
                        _ => tag,
                    }
                })
                .collect()
        };
        for tag in tags {
            rows.push([
                r.system.clone(),
                r.itype.clone(),
                r.status.to_string(),
                id_prefix(&r.id).to_owned(),
                format_time(r.last_pull),
                tag,
            ]);
        }
    }
    rows.sort_by(|a, b| a[5].cmp(&b[5]).then_with(|| a[1].cmp(&b[1])));
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `STATUS detail` for one poll of a pull.
pub fn progress_text(rec: &ImageRecord) -> String {
    let mut s = rec.status.to_string();
    match rec.status {
        ImageStatus::Ready => {
            s.push_str(&format!(
                " {} ({})",
                id_prefix(&rec.id),
                human_bytes(rec.size)
            ));
        }
        ImageStatus::Failure => {
            if !rec.status_message.is_empty() {
                s.push_str(&format!(": {}", rec.status_message));
            }
        }
        _ => {
            if let Some(p) = rec.progress {
                if let Some(d) = done_of(p.bytes_downloaded, p.bytes_total) {
                    s.push_str(&format!(" {d}"));
                }
                if let Some(c) = done_of(p.bytes_converted, p.bytes_to_convert) {
                    s.push_str(&format!(", converted {c}"));
                }
            }
            if !rec.status_message.is_empty() {
                s.push_str(&format!(" ({})", rec.status_message));
            }
        }
    }
    s
}

/// "12.0 MiB/40.0 MiB", or "12.0 MiB" while the total is unknown, or nothing before
/// the first byte.
fn done_of(done: u64, total: u64) -> Option<String> {
    if total > 0 {
        Some(format!("{}/{}", human_bytes(done), human_bytes(total)))
    } else if done > 0 {
        Some(human_bytes(done))
    } else {
        None
    }
}

/// Pull progress: one rewritten line on a terminal, a line per change otherwise
/// (so logs of batch scripts stay short).
pub struct Progress<W: Write> {
    out: W,
    tty: bool,
    image: String,
    last: Option<String>,
    drawn: bool,
    width: Option<usize>,
}

impl<W: Write> Progress<W> {
    pub fn new(out: W, tty: bool, image: impl Into<String>) -> Self {
        Progress {
            out,
            tty,
            image: image.into(),
            last: None,
            drawn: false,
            width: None,
        }
    }

    /// Terminal width: the live line is cut to fit, because a wrapped line
    /// cannot be rewritten in place with `\r`.
    pub fn with_width(mut self, width: Option<usize>) -> Self {
        self.width = width;
        self
    }

    pub fn update(&mut self, rec: &ImageRecord) -> io::Result<()> {
        let text = progress_text(rec);
        if self.tty {
            let mut line = format!("{}: {text}", self.image);
            // The final line is followed by a newline, so it may wrap.
            if let Some(w) = self.width.filter(|w| *w > 1 && !rec.status.is_final()) {
                if line.chars().count() >= w {
                    line = line.chars().take(w - 1).collect();
                }
            }
            // \r + erase-line keeps one line that changes in place.
            write!(self.out, "\r\x1b[2K{line}")?;
            self.drawn = true;
        } else {
            // Without a terminal only status changes are worth a line.
            let key = rec.status.to_string();
            if self.last.as_deref() != Some(key.as_str()) {
                writeln!(self.out, "{}: {text}", self.image)?;
                self.last = Some(key);
            }
        }
        self.out.flush()
    }

    /// Ends the live line so later output starts on its own line.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.tty && self.drawn {
            writeln!(self.out)?;
            self.drawn = false;
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shifter_api::record::PullProgress;

    fn rec(tag: &str, status: ImageStatus, last_pull: i64) -> ImageRecord {
        ImageRecord {
            id: "0123456789abcdef".repeat(4),
            system: "cluster1".into(),
            itype: "docker".into(),
            tag: vec![tag.into()],
            status,
            status_message: String::new(),
            user_acl: vec![],
            group_acl: vec![],
            env: vec![],
            entry: vec![],
            cmd: vec![],
            workdir: String::new(),
            labels: Default::default(),
            last_pull,
            size: 5 * 1024 * 1024,
            progress: None,
            owner: None,
            private_copy: false,
        }
    }

    #[test]
    fn sizes_are_binary_units_with_one_decimal() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn times_are_utc_seconds_and_dash_for_never() {
        assert_eq!(format_time(1_795_866_055), "2026-11-28T11:40:55");
        assert_eq!(format_time(0), "-");
    }

    #[test]
    fn docker_hub_tags_are_shown_as_typed() {
        assert_eq!(
            short_tag("docker", "docker.io/library/ubuntu:24.04"),
            "ubuntu:24.04"
        );
        assert_eq!(
            short_tag("docker", "docker.io/nvidia/cuda:12"),
            "nvidia/cuda:12"
        );
        assert_eq!(
            short_tag("docker", "127.0.0.1:5000/busybox:latest"),
            "127.0.0.1:5000/busybox:latest"
        );
        assert_eq!(short_tag("custom", "docker.io/x"), "docker.io/x");
    }

    #[test]
    fn images_table_is_aligned_sorted_and_one_row_per_tag() {
        let mut a = rec(
            "docker.io/library/ubuntu:24.04",
            ImageStatus::Ready,
            1_795_866_055,
        );
        a.tag.push("docker.io/library/ubuntu:latest".into());
        let mut b = rec("127.0.0.1:5000/busybox:latest", ImageStatus::Ready, 0);
        b.itype = "docker".into();
        b.system = "tb".into();
        let table = images_table(&[a, b]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines,
            [
                "tb        docker  READY  0123456789ab  -                    127.0.0.1:5000/busybox:latest",
                "cluster1  docker  READY  0123456789ab  2026-11-28T11:40:55  ubuntu:24.04",
                "cluster1  docker  READY  0123456789ab  2026-11-28T11:40:55  ubuntu:latest",
            ]
        );
        assert_eq!(images_table(&[]), "");
    }

    #[test]
    fn progress_shows_bytes_while_pulling_and_id_when_ready() {
        let mut r = rec("t", ImageStatus::Pulling, 0);
        r.progress = Some(PullProgress {
            bytes_downloaded: 2048,
            bytes_total: 4096,
            bytes_converted: 0,
            bytes_to_convert: 0,
        });
        assert_eq!(progress_text(&r), "PULLING 2.0 KiB/4.0 KiB");
        r.status = ImageStatus::Conversion;
        r.progress = Some(PullProgress {
            bytes_downloaded: 4096,
            bytes_total: 4096,
            bytes_converted: 1024,
            bytes_to_convert: 3072,
        });
        assert_eq!(
            progress_text(&r),
            "CONVERSION 4.0 KiB/4.0 KiB, converted 1.0 KiB/3.0 KiB"
        );
        r.status = ImageStatus::Ready;
        assert_eq!(progress_text(&r), "READY 0123456789ab (5.0 MiB)");
        r.status = ImageStatus::Failure;
        r.status_message = "manifest unknown".into();
        assert_eq!(progress_text(&r), "FAILURE: manifest unknown");
    }

    #[test]
    fn plain_progress_prints_a_line_per_status_change() {
        let mut buf = Vec::new();
        let mut p = Progress::new(&mut buf, false, "docker:busybox");
        for st in [
            ImageStatus::Pending,
            ImageStatus::Pulling,
            ImageStatus::Pulling,
            ImageStatus::Ready,
        ] {
            p.update(&rec("t", st, 0)).unwrap();
        }
        p.finish().unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(
            text,
            "docker:busybox: PENDING\ndocker:busybox: PULLING\ndocker:busybox: READY 0123456789ab (5.0 MiB)\n"
        );
    }

    #[test]
    fn terminal_progress_line_is_cut_to_the_terminal_width() {
        let image = "docker:registry.example.org/a/very/long/name:tag";
        let mut p = Progress::new(Vec::new(), true, image).with_width(Some(30));
        p.update(&rec("t", ImageStatus::Pulling, 0)).unwrap();
        let text = String::from_utf8(p.out.clone()).unwrap();
        let line = text.strip_prefix("\r\x1b[2K").unwrap();
        assert_eq!(line.chars().count(), 29, "{line:?}");
        // The final line ends with a newline, so it is shown whole.
        p.update(&rec("t", ImageStatus::Ready, 0)).unwrap();
        p.finish().unwrap();
        let text = String::from_utf8(p.out).unwrap();
        assert!(text.ends_with("READY 0123456789ab (5.0 MiB)\n"), "{text:?}");
    }

    #[test]
    fn terminal_progress_rewrites_one_line_and_ends_it() {
        let mut buf = Vec::new();
        let mut p = Progress::new(&mut buf, true, "img");
        p.update(&rec("t", ImageStatus::Pulling, 0)).unwrap();
        p.update(&rec("t", ImageStatus::Ready, 0)).unwrap();
        p.finish().unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "{text:?}");
        assert!(text.starts_with("\r\x1b[2Kimg: PULLING"), "{text:?}");
        assert!(text.ends_with("READY 0123456789ab (5.0 MiB)\n"), "{text:?}");
    }
}
