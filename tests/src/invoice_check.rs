//! Reading an invoice back the way its readers do: headless Chromium renders the HTML file
//! (a screenshot, and the DOM it built), and the numbers are taken from the `data-field`
//! attributes of that DOM; the CSV is parsed as RFC 4180.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::env;

const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs headless Chromium on `html` with `extra` arguments; returns its stdout. A profile
/// directory of its own under `work`, so concurrent runs do not share state.
fn chromium(html: &Path, work: &Path, extra: &[String]) -> String {
    let bin = env::which("chromium").expect("chromium not installed (cargo xtask test installs it)");
    let profile = work.join(format!("chromium-profile-{}", env::random_hex(4)));
    let out_file = work.join(format!("chromium-{}.out", env::random_hex(4)));
    let err_file = work.join(format!("chromium-{}.err", env::random_hex(4)));
    let mut cmd = Command::new(bin);
    cmd.args(["--headless", "--disable-gpu", "--no-first-run", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(file_url(html))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(std::fs::File::create(&err_file).unwrap());
    // SAFETY: geteuid has no preconditions. Chromium refuses to run as root with its sandbox.
    if unsafe { libc::geteuid() } == 0 {
        cmd.arg("--no-sandbox");
    }
    env::set_pdeathsig(&mut cmd, libc::SIGKILL);
    let mut child = cmd.spawn().expect("spawn chromium");
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait chromium") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {CHROMIUM_TIMEOUT:?}: {}", env::tail_lines(&err_file, 20));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "chromium failed ({status}): {}", env::tail_lines(&err_file, 20));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::read_to_string(&out_file).expect("chromium stdout")
}

/// `file://` URL of `path`, with every byte outside the unreserved set percent-encoded.
fn file_url(path: &Path) -> String {
    let path = path.canonicalize().expect("invoice html path");
    let mut url = String::from("file://");
    for b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(b) {
            url.push(*b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

/// The DOM Chromium built from `html` (`--dump-dom`).
pub fn dump_dom(html: &Path, work: &Path) -> String {
    let dom = chromium(html, work, &["--dump-dom".into()]);
    assert!(dom.contains("</html>"), "chromium dumped no document for {}", html.display());
    dom
}

/// A screenshot of `html`; asserts it is a PNG of a real size and returns its path.
pub fn screenshot(html: &Path, work: &Path) -> PathBuf {
    let png = work.join(format!("{}.png", html.file_stem().unwrap().to_string_lossy()));
    let _ = std::fs::remove_file(&png);
    chromium(html, work, &[format!("--screenshot={}", png.display()), "--window-size=1280,1600".into()]);
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: no screenshot: {e}", png.display()));
    assert!(bytes.len() > 2000 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{}: not a PNG image", png.display());
    let (w, h) = (be32(&bytes[16..20]), be32(&bytes[20..24]));
    assert!(w >= 800 && h >= 600, "{}: {w}×{h} screenshot", png.display());
    png
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// One line item as the DOM shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DomLine {
    pub team: String,
    pub model: String,
    pub token_type: String,
    pub tokens: u64,
    /// `None`: "unpriced" (or "—" for a cost not itemized by token type).
    pub unit_price: Option<String>,
    pub amount_cents: i128,
}

/// The numbers of an invoice's DOM.
#[derive(Debug, Clone)]
pub struct DomInvoice {
    pub id: String,
    /// `data-field` → every text with it, in document order.
    pub fields: BTreeMap<String, Vec<String>>,
    pub lines: Vec<DomLine>,
}

impl DomInvoice {
    pub fn parse(dom: &str) -> DomInvoice {
        let id = attr(dom, "<body", "data-invoice-id").expect("data-invoice-id on <body>");
        let mut fields: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, text) in data_fields(dom) {
            fields.entry(name).or_default().push(text);
        }
        let mut lines = Vec::new();
        for row in dom.split("<tr ").skip(1).filter(|r| r.starts_with("class=\"line")) {
            let row = &row[..row.find("</tr>").expect("closed <tr>")];
            let f: BTreeMap<String, String> = data_fields(row).collect();
            let price = f["unit-price"].clone();
            lines.push(DomLine {
                team: attr(row, "", "data-team").expect("data-team"),
                model: attr(row, "", "data-model").expect("data-model"),
                token_type: attr(row, "", "data-token-type").expect("data-token-type"),
                tokens: f["tokens"].parse().expect("tokens"),
                unit_price: (price != "unpriced" && price != "—").then_some(price),
                amount_cents: cents(&f["amount"]),
            });
        }
        DomInvoice { id, fields, lines }
    }

    /// The only text with `data-field="name"`.
    pub fn one(&self, name: &str) -> &str {
        match self.fields.get(name).map(Vec::as_slice) {
            Some([one]) => one,
            other => panic!("data-field {name:?}: expected one, found {other:?}"),
        }
    }
}

/// `12.34` → 1234 (also `-0.05`, `7`).
pub fn cents(text: &str) -> i128 {
    let (neg, t) = text.strip_prefix('-').map(|t| (true, t)).unwrap_or((false, text));
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    assert!(frac.len() <= 2, "{text:?}: not an amount in cents");
    let v = int.parse::<i128>().expect("amount") * 100 + format!("{frac:0<2}").parse::<i128>().expect("amount");
    if neg {
        -v
    } else {
        v
    }
}

/// Every `data-field="NAME">TEXT<` in `html`.
fn data_fields(html: &str) -> impl Iterator<Item = (String, String)> + '_ {
    html.match_indices("data-field=\"").map(move |(at, m)| {
        let rest = &html[at + m.len()..];
        let name_end = rest.find('"').expect("closed attribute");
        let text = &rest[rest.find('>').expect("tag end") + 1..];
        (rest[..name_end].to_string(), unescape(&text[..text.find('<').unwrap_or(text.len())]))
    })
}

/// The value of attribute `name` in the first tag after `tag` (`""`: anywhere).
fn attr(html: &str, tag: &str, name: &str) -> Option<String> {
    let start = html.find(tag)?;
    let key = format!("{name}=\"");
    let at = start + html[start..].find(&key)? + key.len();
    Some(unescape(&html[at..at + html[at..].find('"')?]))
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

/// RFC 4180 records (quoted fields may hold commas, quotes and line breaks).
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut records, mut record, mut field) = (Vec::new(), Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    records
}
