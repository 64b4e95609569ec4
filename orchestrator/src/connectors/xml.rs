//! The little XML the connectors need: escaping text into requests, and reading answers by local name.

use roxmltree::Node;

pub(crate) const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// `text` safe inside an element or a double-quoted attribute.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The first child element called `name` (any namespace).
pub(crate) fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|n| n.is_element() && n.tag_name().name() == name)
}

/// Every child element called `name`.
pub(crate) fn children<'a, 'i: 'a>(node: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children().filter(move |n| n.is_element() && n.tag_name().name() == name)
}

/// The text of the child called `name`, or empty.
pub(crate) fn text<'a>(node: Node<'a, '_>, name: &str) -> &'a str {
    child(node, name).and_then(|n| n.text()).unwrap_or("")
}

/// The first descendant element called `name`.
pub(crate) fn find<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.descendants().find(|n| n.is_element() && n.tag_name().name() == name)
}

/// An element's `xsi:type`, without a namespace prefix.
pub(crate) fn xsi_type<'a>(node: Node<'a, '_>) -> &'a str {
    let t = node.attribute((XSI, "type")).unwrap_or("");
    t.rsplit(':').next().unwrap_or(t)
}
