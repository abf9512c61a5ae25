//! A small, bounded XML reader for the SOAP answers of ONVIF devices.
//!
//! Not a general XML parser: it keeps what `discover` reads (element local
//! names, attributes, text) in a flat tree and refuses everything else
//! loudly. Why not quick-xml or roxmltree: the aarch64 agent has a few KB
//! of size budget left, and the answers we read are small and regular.
//!
//! - Names are matched by local name (`trt:Profiles`, `Profiles` and
//!   `ns7:Profiles` are the same): devices use every prefix imaginable
//!   and we read a handful of well-known elements.
//! - The five predefined entities and character references are decoded;
//!   anything else (a DTD, an unknown entity) is an error, which also
//!   keeps entity expansion attacks out.
//! - CDATA sections become text; comments and processing instructions are
//!   skipped.
//! - Hard caps: [`MAX_INPUT`] bytes, [`MAX_DEPTH`] levels, [`MAX_NODES`]
//!   elements, [`MAX_ATTRS`] attributes per element. Past them the
//!   document is refused, never truncated silently.

use std::fmt;

/// Largest document accepted, in bytes (a GetProfiles answer of a
/// 16-channel NVR is about 40 KB).
pub const MAX_INPUT: usize = 64 * 1024;
/// Deepest element nesting accepted (GetProfiles answers go about 8 deep).
pub const MAX_DEPTH: usize = 32;
/// Most elements in one document.
pub const MAX_NODES: usize = 4096;
/// Most attributes on one element.
pub const MAX_ATTRS: usize = 32;

/// Why a document was refused. `at` is a byte offset into the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    /// What was wrong.
    pub what: &'static str,
    /// Where (byte offset).
    pub at: usize,
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.what, self.at)
    }
}

impl std::error::Error for XmlError {}

/// One element: local name, attributes (local names), direct text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Local name (the part after the prefix).
    pub name: String,
    /// Attributes by local name, in document order; `xmlns` ones dropped.
    pub attrs: Vec<(String, String)>,
    /// The element's own text (not its children's), entities decoded.
    pub text: String,
    /// Index of the parent element; `None` for the root.
    pub parent: Option<usize>,
}

/// A parsed document: elements in document order (index 0 is the root).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Doc {
    /// The elements; a parent always comes before its children.
    pub nodes: Vec<Node>,
}

fn err(what: &'static str, at: usize) -> XmlError {
    XmlError { what, at }
}

/// The part of a qualified name after the last `:`.
pub fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

fn is_name_byte(b: u8) -> bool {
    !matches!(
        b,
        b' ' | b'\t' | b'\r' | b'\n' | b'>' | b'/' | b'=' | b'<' | b'"' | b'\''
    )
}

/// Decodes the five predefined entities and character references.
pub fn decode(raw: &str, at: usize) -> Result<String, XmlError> {
    if !raw.contains('&') {
        return Ok(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after
            .find(';')
            .filter(|&e| e <= 10)
            .ok_or_else(|| err("an `&` that starts no entity", at))?;
        let name = &after[..end];
        let c = match name {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = name.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = name.strip_prefix('#') {
                    dec.parse::<u32>().ok()
                } else {
                    return Err(err("an entity other than the five XML ones", at));
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| err("a bad character reference", at))?
            }
        };
        out.push(c);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Doc {
    /// Parses `input` (UTF-8). Never panics; every limit is an error.
    pub fn parse(input: &[u8]) -> Result<Doc, XmlError> {
        if input.len() > MAX_INPUT {
            return Err(err("the document is larger than 64 KiB", MAX_INPUT));
        }
        let text = std::str::from_utf8(input)
            .map_err(|e| err("the document is not UTF-8", e.valid_up_to()))?;
        // A UTF-8 byte order mark is allowed before the declaration.
        let start = if text.starts_with('\u{feff}') { 3 } else { 0 };
        let b = text.as_bytes();
        let mut doc = Doc::default();
        let mut stack: Vec<(usize, &str)> = Vec::new();
        let mut closed_root = false;
        let mut i = start;
        while i < b.len() {
            if b[i] != b'<' {
                let end = text[i..].find('<').map_or(b.len(), |n| i + n);
                let raw = &text[i..end];
                match stack.last() {
                    Some(&(top, _)) => {
                        let t = decode(raw, i)?;
                        doc.nodes[top].text.push_str(&t);
                    }
                    None if raw.trim().is_empty() => {}
                    None => return Err(err("text outside the root element", i)),
                }
                i = end;
                continue;
            }
            let rest = &text[i..];
            if rest.starts_with("<?") {
                i += rest.find("?>").ok_or_else(|| err("an unclosed `<?`", i))? + 2;
            } else if rest.starts_with("<!--") {
                i += rest
                    .find("-->")
                    .ok_or_else(|| err("an unclosed comment", i))?
                    + 3;
            } else if let Some(cdata) = rest.strip_prefix("<![CDATA[") {
                let end = cdata
                    .find("]]>")
                    .ok_or_else(|| err("an unclosed CDATA section", i))?;
                let &(top, _) = stack
                    .last()
                    .ok_or_else(|| err("CDATA outside the root element", i))?;
                doc.nodes[top].text.push_str(&cdata[..end]);
                i += 9 + end + 3;
            } else if rest.starts_with("<!") {
                return Err(err("a DTD or declaration (not allowed in SOAP)", i));
            } else if let Some(close) = rest.strip_prefix("</") {
                let end = close
                    .find('>')
                    .ok_or_else(|| err("an unclosed end tag", i))?;
                let name = close[..end].trim_end();
                match stack.pop() {
                    Some((_, open)) if open == name => {}
                    _ => return Err(err("an end tag that does not match", i)),
                }
                if stack.is_empty() {
                    closed_root = true;
                }
                i += 2 + end + 1;
            } else {
                if closed_root {
                    return Err(err("a second root element", i));
                }
                i = doc.open_tag(text, i, &mut stack)?;
                // A self-closing root closes the document too.
                closed_root = stack.is_empty();
            }
        }
        if !stack.is_empty() || doc.nodes.is_empty() {
            return Err(err("the document ends inside an element", b.len()));
        }
        Ok(doc)
    }

    /// Reads a start tag at `at` (on `<`); returns the index after it.
    fn open_tag<'a>(
        &mut self,
        text: &'a str,
        at: usize,
        stack: &mut Vec<(usize, &'a str)>,
    ) -> Result<usize, XmlError> {
        let b = text.as_bytes();
        let mut i = at + 1;
        let name_start = i;
        while i < b.len() && is_name_byte(b[i]) {
            i += 1;
        }
        if i == name_start {
            return Err(err("a `<` without an element name", at));
        }
        let qname = &text[name_start..i];
        if self.nodes.len() >= MAX_NODES {
            return Err(err("more than 4096 elements", at));
        }
        if stack.len() >= MAX_DEPTH {
            return Err(err("elements nested more than 32 deep", at));
        }
        let mut attrs = Vec::new();
        let self_closing = loop {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            match b.get(i) {
                None => return Err(err("an unclosed start tag", at)),
                Some(b'>') => {
                    i += 1;
                    break false;
                }
                Some(b'/') if b.get(i + 1) == Some(&b'>') => {
                    i += 2;
                    break true;
                }
                Some(_) => {}
            }
            let a_start = i;
            while i < b.len() && is_name_byte(b[i]) {
                i += 1;
            }
            if i == a_start {
                return Err(err("a bad attribute", i));
            }
            let a_name = &text[a_start..i];
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if b.get(i) != Some(&b'=') {
                return Err(err("an attribute without a value", i));
            }
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let quote = match b.get(i) {
                Some(&q @ (b'"' | b'\'')) => q,
                _ => return Err(err("an unquoted attribute value", i)),
            };
            i += 1;
            let v_start = i;
            while i < b.len() && b[i] != quote {
                if b[i] == b'<' {
                    return Err(err("a `<` inside an attribute value", i));
                }
                i += 1;
            }
            if i >= b.len() {
                return Err(err("an unclosed attribute value", v_start));
            }
            let value = decode(&text[v_start..i], v_start)?;
            i += 1;
            if a_name == "xmlns" || a_name.starts_with("xmlns:") {
                continue;
            }
            if attrs.len() >= MAX_ATTRS {
                return Err(err("more than 32 attributes on one element", a_start));
            }
            attrs.push((local(a_name).to_owned(), value));
        };
        let idx = self.nodes.len();
        self.nodes.push(Node {
            name: local(qname).to_owned(),
            attrs,
            text: String::new(),
            parent: stack.last().map(|&(p, _)| p),
        });
        if !self_closing {
            stack.push((idx, qname));
        }
        Ok(i)
    }

    /// The direct children of element `i`, in order.
    pub fn children(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        // Children come after their parent; a linear scan is fine for
        // documents of at most MAX_NODES elements read a few times.
        (i + 1..self.nodes.len()).filter(move |&c| self.nodes[c].parent == Some(i))
    }

    /// The first direct child of `i` named `name` (local name).
    pub fn child(&self, i: usize, name: &str) -> Option<usize> {
        self.children(i).find(|&c| self.nodes[c].name == name)
    }

    /// Follows a path of local names down from `i` (first match each step).
    pub fn path(&self, i: usize, names: &[&str]) -> Option<usize> {
        names.iter().try_fold(i, |at, n| self.child(at, n))
    }

    /// Whether `d` is `a` or below it.
    pub fn within(&self, d: usize, a: usize) -> bool {
        let mut at = Some(d);
        while let Some(n) = at {
            if n == a {
                return true;
            }
            at = self.nodes.get(n).and_then(|x| x.parent);
        }
        false
    }

    /// Every element named `name` at or below `i`, in document order.
    pub fn descendants<'a>(&'a self, i: usize, name: &'a str) -> impl Iterator<Item = usize> + 'a {
        (i..self.nodes.len()).filter(move |&d| self.nodes[d].name == name && self.within(d, i))
    }

    /// The first element named `name` anywhere.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The trimmed text of element `i`.
    pub fn text(&self, i: usize) -> &str {
        self.nodes.get(i).map_or("", |n| n.text.trim())
    }

    /// The value of attribute `name` (local name) of element `i`.
    pub fn attr(&self, i: usize, name: &str) -> Option<&str> {
        self.nodes
            .get(i)?
            .attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_entities_and_cdata() {
        let d = Doc::parse(
            br#"<?xml version="1.0"?><!-- c --><s:E xmlns:s="x"><a:B k='v&amp;w' xmlns:a="y">1 &lt; 2 &#x41;&#66;</a:B><C/><D><![CDATA[<raw>]]></D></s:E>"#,
        )
        .expect("parses");
        assert_eq!(d.nodes.len(), 4);
        let b = d.find("B").expect("B");
        assert_eq!(d.text(b), "1 < 2 AB");
        assert_eq!(d.attr(b, "k"), Some("v&w"));
        assert_eq!(d.text(d.find("D").expect("D")), "<raw>");
        assert_eq!(d.children(0).count(), 3);
        assert_eq!(d.path(0, &["B"]), Some(b));
    }

    #[test]
    fn refuses_what_it_does_not_read() {
        for bad in [
            &b"<a><b></a></b>"[..],
            b"<a>",
            b"<a>&nbsp;</a>",
            b"<a>& x</a>",
            b"<!DOCTYPE a [<!ENTITY x 'y'>]><a/>",
            b"<a k=v/>",
            b"<a/><b/>",
            b"text",
            b"<a><![CDATA[x</a>",
            b"<a>&#xD800;</a>",
            b"\xff<a/>",
            b"",
            b"<",
            b"<a k='<'/>",
        ] {
            assert!(
                Doc::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn limits() {
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert_eq!(
            Doc::parse(deep.as_bytes()).map_err(|e| e.what),
            Err("elements nested more than 32 deep")
        );
        let ok = "<a>".repeat(MAX_DEPTH) + &"</a>".repeat(MAX_DEPTH);
        assert!(Doc::parse(ok.as_bytes()).is_ok());
        let many = format!("<r>{}</r>", "<b/>".repeat(MAX_NODES));
        assert_eq!(
            Doc::parse(many.as_bytes()).map_err(|e| e.what),
            Err("more than 4096 elements")
        );
        let big = format!("<r>{}</r>", "x".repeat(MAX_INPUT));
        assert!(Doc::parse(big.as_bytes()).is_err());
        let attrs: String = (0..=MAX_ATTRS).map(|i| format!(" a{i}='1'")).collect();
        assert!(Doc::parse(format!("<r{attrs}/>").as_bytes()).is_err());
    }
}
