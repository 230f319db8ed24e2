//! The docs tell the same story as the code. Every table in README.md and docs/ that lists what
//! the code defines (programs, maps, pinned objects, drop reasons, the fabric file's tables and
//! keys) is read back and compared with the code, so that neither can change alone; so are the
//! README's index of docs/, the data path in its `iqd status` example, and every link to a
//! heading. No root needed: nothing here touches the system.
//!
//! The benchmark's systems table (README) is checked by xtask's own tests, where its systems are
//! defined.
use std::{
    collections::BTreeSet,
    fmt::Debug,
    fs,
    path::{Path, PathBuf},
};

use iqd::config::{keys, Fabric};
use iqd_common::{drop_reason, map_names, program_names};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    let path = root().join(path);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A line of a Markdown file, and whether it is inside a fenced code block.
fn lines(md: &str) -> Vec<(&str, bool)> {
    let mut fenced = false;
    md.lines()
        .map(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return (line, true);
            }
            (line, fenced)
        })
        .collect()
}

/// The level and text of a heading line outside code blocks.
fn heading(line: &str, fenced: bool) -> Option<(usize, &str)> {
    if fenced {
        return None;
    }
    let level = line.chars().take_while(|c| *c == '#').count();
    let text = line[level..].strip_prefix(' ')?;
    (level > 0).then_some((level, text.trim()))
}

/// The lines under the first heading whose text `matches`, up to the next heading of the same
/// or a higher level (subsections included).
fn section(md: &str, file: &str, matches: impl Fn(&str) -> bool) -> String {
    let lines = lines(md);
    let start = lines
        .iter()
        .position(|(l, f)| heading(l, *f).is_some_and(|(_, text)| matches(text)))
        .unwrap_or_else(|| panic!("{file}: no such heading"));
    let (level, _) = heading(lines[start].0, false).unwrap();
    lines[start + 1..]
        .iter()
        .take_while(|(l, f)| heading(l, *f).is_none_or(|(lvl, _)| lvl > level))
        .map(|(l, _)| *l)
        .collect::<Vec<_>>()
        .join("\n")
}

fn section_titled(md: &str, file: &str, title: &str) -> String {
    section(md, &format!("{file} `{title}`"), |text| text == title)
}

/// A Markdown table: the header's cells and every body row's.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Cells of a table row; `\|` is a pipe inside a cell.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    cells.into_iter().map(|c| c.trim().to_string()).collect()
}

/// Every table in `text`, in order (tables inside code blocks are not tables).
fn tables(text: &str) -> Vec<Table> {
    let mut tables = Vec::new();
    let mut current: Option<Table> = None;
    for (line, fenced) in lines(text) {
        let row = !fenced && line.trim_start().starts_with('|');
        match (&mut current, row) {
            (None, true) => {
                current = Some(Table {
                    header: cells(line),
                    rows: Vec::new(),
                })
            }
            (Some(table), true) => {
                let cells = cells(line);
                // The delimiter row (|---|:--:|).
                if !cells
                    .iter()
                    .all(|c| !c.is_empty() && c.chars().all(|ch| "-:".contains(ch)))
                {
                    table.rows.push(cells);
                }
            }
            (Some(_), false) => tables.extend(current.take()),
            (None, false) => {}
        }
    }
    tables.extend(current);
    tables
}

/// The first table in `text` whose first header cell is `first`.
fn table_headed(text: &str, first: &str, what: &str) -> Table {
    tables(text)
        .into_iter()
        .find(|t| t.header.first().is_some_and(|h| h == first))
        .unwrap_or_else(|| panic!("{what}: no table whose first column is `{first}`"))
}

/// The `code` spans of a piece of Markdown text.
fn code_spans(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The first code span of a cell, which names what the row describes.
fn named(row: &[String], what: &str) -> String {
    code_spans(&row[0])
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{what}: a row names nothing in `code`: {row:?}"))
}

/// Compares two lists as sets (duplicates on either side fail too), naming what differs. `what`
/// reads "X (A vs B)": `docs` is A's list, `code` B's.
fn same_set<T: Ord + Debug + Clone>(docs: &[T], code: &[T], what: &str) {
    let (a, b) = what
        .rsplit_once(" (")
        .and_then(|(_, sides)| sides.strip_suffix(')')?.split_once(" vs "))
        .unwrap_or(("the docs", "the code"));
    let (d, c): (BTreeSet<T>, BTreeSet<T>) = (
        docs.iter().cloned().collect(),
        code.iter().cloned().collect(),
    );
    assert_eq!(
        d.len(),
        docs.len(),
        "{what}: {a} lists something twice: {docs:?}"
    );
    assert_eq!(
        c.len(),
        code.len(),
        "{what}: {b} lists something twice: {code:?}"
    );
    let only_docs: Vec<_> = d.difference(&c).collect();
    let only_code: Vec<_> = c.difference(&d).collect();
    assert!(
        only_docs.is_empty() && only_code.is_empty(),
        "{what}: they disagree; change the side that is wrong.\n  only in {a}: {only_docs:?}\n  \
         only in {b}: {only_code:?}"
    );
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn drop_reasons_match_the_code() {
    let md = read("docs/architecture.md");
    let table = table_headed(
        &section_titled(&md, "docs/architecture.md", "Drop reasons"),
        "Index",
        "docs/architecture.md, Drop reasons",
    );
    let docs: Vec<(usize, String)> = table
        .rows
        .iter()
        .map(|row| {
            let index = row[0]
                .parse()
                .unwrap_or_else(|_| panic!("drop reasons: index `{}` is not a number", row[0]));
            (index, code_spans(&row[1]).concat())
        })
        .collect();
    let code: Vec<(usize, String)> = drop_reason::NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| (i, name.to_string()))
        .collect();
    same_set(
        &docs,
        &code,
        "drop reasons (docs/architecture.md vs iqd_common::drop_reason)",
    );
    assert_eq!(drop_reason::NAMES.len(), drop_reason::COUNT);
}

#[test]
fn maps_match_the_code() {
    let md = read("docs/architecture.md");
    let table = table_headed(
        &section_titled(&md, "docs/architecture.md", "Maps"),
        "Name",
        "docs/architecture.md, Maps",
    );
    let docs: Vec<String> = table.rows.iter().map(|r| named(r, "maps")).collect();
    same_set(
        &docs,
        &strings(&map_names::ALL),
        "maps (docs/architecture.md vs iqd_common::map_names::ALL)",
    );
}

#[test]
fn map_names_are_every_map_the_data_plane_defines() {
    // `#[map(name = "IQD_...")]` in iqd-ebpf/src/maps.rs.
    let source = read("iqd-ebpf/src/maps.rs");
    let defined: Vec<String> = source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("#[map(name = \""))
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect();
    same_set(
        &defined,
        &strings(&map_names::ALL),
        "maps (iqd-ebpf/src/maps.rs vs iqd_common::map_names::ALL)",
    );
}

#[test]
fn programs_match_the_code() {
    let md = read("docs/architecture.md");
    let table = table_headed(
        &section_titled(&md, "docs/architecture.md", "Programs"),
        "Program",
        "docs/architecture.md, Programs",
    );
    let docs: Vec<String> = table.rows.iter().map(|r| named(r, "programs")).collect();
    same_set(
        &docs,
        &strings(&program_names::ALL),
        "programs (docs/architecture.md vs iqd_common::program_names::ALL)",
    );
}

#[test]
fn program_names_are_every_program_of_the_object() {
    // A program is a function under `#[xdp...]` or `#[classifier...]` in iqd-ebpf/src/main.rs.
    let source = read("iqd-ebpf/src/main.rs");
    let mut defined = Vec::new();
    let mut attribute = false;
    for line in source.lines().map(str::trim) {
        if line.starts_with("#[xdp") || line.starts_with("#[classifier") {
            attribute = true;
        } else if attribute {
            if let Some(rest) = line.strip_prefix("pub fn ") {
                defined.push(rest.split('(').next().unwrap().to_string());
                attribute = false;
            }
        }
    }
    same_set(
        &defined,
        &strings(&program_names::ALL),
        "programs (iqd-ebpf/src/main.rs vs iqd_common::program_names::ALL)",
    );
}

#[test]
fn pinned_objects_are_the_maps_and_programs() {
    let md = read("docs/architecture.md");
    let listing = section_titled(&md, "docs/architecture.md", "Pinned objects");
    let names: Vec<&str> = lines(&listing)
        .into_iter()
        .filter(|(_, fenced)| *fenced)
        .filter_map(|(line, _)| line.split_whitespace().next())
        .collect();
    let maps: Vec<String> = names
        .iter()
        .filter(|n| n.starts_with("IQD_"))
        .map(|n| n.to_string())
        .collect();
    same_set(
        &maps,
        &strings(&map_names::ALL),
        "pinned maps (docs/architecture.md vs iqd_common::map_names::ALL)",
    );
    let programs: Vec<String> = names
        .iter()
        .filter_map(|n| n.strip_prefix("prog_"))
        .map(str::to_string)
        .collect();
    same_set(
        &programs,
        &strings(&program_names::ALL),
        "pinned programs (docs/architecture.md vs iqd_common::program_names::ALL)",
    );
}

/// The table path a heading or list item names: `[fabric]` or `[[lpar.nic]]` in code.
fn table_path(text: &str) -> Option<String> {
    code_spans(text).into_iter().find_map(|span| {
        let path = span.strip_prefix("[[").and_then(|s| s.strip_suffix("]]"));
        let path = path.or_else(|| span.strip_prefix('[').and_then(|s| s.strip_suffix(']')))?;
        (!path.is_empty() && !path.contains(['[', ']', ' '])).then(|| path.to_string())
    })
}

#[test]
fn fabric_file_keys_match_the_parser() {
    const FILE: &str = "docs/configuration.md";
    let md = read(FILE);
    let parser = keys::tables();
    let parser_paths: Vec<String> = parser
        .iter()
        .filter(|(path, _)| !path.is_empty())
        .map(|(path, _)| path.to_string())
        .collect();

    // The list at the top names every table of the file.
    let intro = &md[..md.find("\n## ").expect("a second-level heading")];
    let listed: Vec<String> = intro
        .lines()
        .filter(|l| l.starts_with("- "))
        .filter_map(|l| table_path(l.split(':').next().unwrap()))
        .collect();
    let top_level: Vec<String> = listed
        .iter()
        .filter(|p| !p.contains('.'))
        .cloned()
        .collect();
    let (_, file_keys) = parser.iter().find(|(p, _)| p.is_empty()).unwrap();
    same_set(
        &top_level,
        &strings(file_keys),
        "top-level tables (docs/configuration.md's list vs the parser)",
    );

    // Every table has a heading under "Keys", with a table of its keys.
    let keys_section = section_titled(&md, FILE, "Keys");
    let documented: Vec<String> = lines(&keys_section)
        .into_iter()
        .filter_map(|(l, f)| heading(l, f))
        .filter_map(|(_, text)| table_path(text))
        .collect();
    same_set(
        &documented,
        &parser_paths,
        "tables with a section under Keys (docs/configuration.md vs the parser)",
    );
    for (path, keys) in parser.iter().filter(|(path, _)| !path.is_empty()) {
        let text = section(&keys_section, &format!("{FILE} table {path}"), |text| {
            table_path(text).as_deref() == Some(path)
        });
        let table = table_headed(&text, "Key", &format!("{FILE}, table {path}"));
        // A row may name several keys (`port_min`, `port_max`).
        let docs: Vec<String> = table.rows.iter().flat_map(|r| code_spans(&r[0])).collect();
        same_set(
            &docs,
            &strings(keys),
            &format!("keys of [{path}] (docs/configuration.md vs the parser)"),
        );
    }

    // The documented default data path is the parser's.
    let fabric = section(&keys_section, FILE, |t| {
        table_path(t).as_deref() == Some("fabric")
    });
    let table = table_headed(&fabric, "Key", FILE);
    let row = table
        .rows
        .iter()
        .find(|r| code_spans(&r[0]) == ["datapath"])
        .expect("a datapath row");
    let default = minimal_fabric().datapath.to_string();
    assert_eq!(
        code_spans(&row[2]),
        [default],
        "{FILE}: the default datapath"
    );
}

/// The "unknown field" messages quoted in configuration.md name the keys of a table as the parser
/// has them now.
#[test]
fn quoted_unknown_key_errors_name_the_parsers_keys() {
    const FILE: &str = "docs/configuration.md";
    let md = read(FILE);
    let parser: Vec<BTreeSet<&str>> = keys::tables()
        .iter()
        .map(|(_, keys)| keys.iter().copied().collect())
        .collect();
    let mut quoted = 0;
    for line in md.lines().filter(|l| l.contains("unknown field `")) {
        // serde: "expected `a`", "expected `a` or `b`", "expected one of `a`, `b`, `c`"; the
        // message ends its double-backtick code span with " ``".
        let (_, expected) = line
            .split_once(", expected ")
            .unwrap_or_else(|| panic!("{FILE}: no expected keys in: {line}"));
        let expected = expected.split(" ``").next().unwrap();
        let names: BTreeSet<&str> = expected.split('`').skip(1).step_by(2).collect();
        assert!(
            parser.contains(&names),
            "{FILE}: the message lists keys no table of the parser has ({names:?}): {line}"
        );
        quoted += 1;
    }
    assert!(quoted > 0, "{FILE}: no unknown-field message found");
}

/// A fabric file that sets nothing it need not.
fn minimal_fabric() -> Fabric {
    Fabric::parse(
        "[fabric]\nname = \"f\"\n\n[[chpid]]\nid = \"F0\"\n",
        Path::new("f.toml"),
    )
    .expect("a minimal fabric file")
}

#[test]
fn the_status_example_shows_the_demo_fabric_as_iqd_prints_it() {
    let demo = Fabric::load(&root().join("examples/demo.toml")).expect("examples/demo.toml");
    let readme = read("README.md");
    let line = format!(
        "fabric {}: up (data path {}, namespace {}, pins /sys/fs/bpf/iqd/{})",
        demo.name,
        demo.datapath,
        demo.netns_name(),
        demo.name
    );
    assert!(
        readme.contains(&line),
        "README.md: the `iqd status` example must start with\n{line}"
    );
}

#[test]
fn the_readme_indexes_every_doc() {
    let readme = read("README.md");
    let mut docs: Vec<String> = fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| {
            e.expect("a docs/ entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".md"))
        .collect();
    docs.sort();
    let index = section_titled(&readme, "README.md", "Documentation");
    let linked: Vec<String> = links(&index)
        .into_iter()
        .filter_map(|l| l.strip_prefix("docs/").map(str::to_string))
        .collect();
    same_set(
        &linked,
        &docs,
        "documented files (README.md's Documentation list vs docs/*.md)",
    );
    let layout = tables(&section_titled(&readme, "README.md", "Repository layout"))
        .into_iter()
        .flat_map(|t| t.rows)
        .find(|r| r[0] == "`docs/`")
        .expect("README.md: a `docs/` row in the repository layout");
    let linked: Vec<String> = links(&layout[1])
        .into_iter()
        .filter_map(|l| l.strip_prefix("docs/").map(str::to_string))
        .collect();
    same_set(
        &linked,
        &docs,
        "documented files (README.md's repository layout vs docs/*.md)",
    );
}

/// The targets of the Markdown links in `text`, `[text](target)`.
fn links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(str::to_string)
        .collect()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces made hyphens.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(md: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    for (line, fenced) in lines(md) {
        if let Some((_, text)) = heading(line, fenced) {
            let base = slug(text);
            let mut anchor = base.clone();
            let mut n = 0;
            while !anchors.insert(anchor.clone()) {
                n += 1;
                anchor = format!("{base}-{n}");
            }
        }
    }
    anchors
}

#[test]
fn links_to_headings_find_them() {
    let mut files = vec![PathBuf::from("README.md")];
    for entry in fs::read_dir(root().join("docs")).expect("docs/") {
        let name = entry.expect("a docs/ entry").file_name();
        if name.to_string_lossy().ends_with(".md") {
            files.push(Path::new("docs").join(name));
        }
    }
    let mut broken = Vec::new();
    for file in &files {
        let md = read(&file.to_string_lossy());
        let body: String = lines(&md)
            .into_iter()
            .filter(|(_, fenced)| !fenced)
            .map(|(l, _)| format!("{l}\n"))
            .collect();
        for link in links(&body) {
            let Some((target, anchor)) = link.split_once('#') else {
                continue;
            };
            if target.contains("://") {
                continue;
            }
            let target_file = if target.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(target)
            };
            let target_md = read(&target_file.to_string_lossy());
            if !anchors(&target_md).contains(anchor) {
                broken.push(format!("{}: {link}", file.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to no heading:\n{}",
        broken.join("\n")
    );
}
