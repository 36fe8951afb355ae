//! The search rules every store shares: how text becomes search words, which fields of a
//! repository are searched, and how much each field counts.
//!
//! - [`words`] is the word rule: runs of alphanumeric characters, lowercased. Stores cut
//!   both the indexed text and the query with it, so a hit never depends on a database's
//!   tokenizer or locale.
//! - [`Field`] names the searched fields, strongest first (name > title > description),
//!   with the weight each carries.
//! - [`SearchDocument`] is what a repository contributes to search: its name, and the
//!   titles and descriptions of its tagged images, each image once.
//!
//! What stays in a store is the mechanics: where it keeps the words (FTS5, `tsvector`,
//! in-memory scoring) and how it ranks with the weights.

use std::collections::BTreeSet;

use crate::model::Description;

/// Lowercased words of `text`: runs of alphanumeric characters. Splitting on everything
/// else covers the `/ . _ -` separators of repository names as well as prose.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// A searched field of a repository. A name hit says more about a repository than a
/// title hit, and a title more than a description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// The repository name.
    Name,
    /// The titles of the repository's tagged images.
    Title,
    /// The descriptions of the repository's tagged images.
    Description,
}

impl Field {
    /// Every field, strongest first.
    pub const ALL: [Field; 3] = [Field::Name, Field::Title, Field::Description];

    /// How much a term counts where it is found in this field.
    pub const fn weight(self) -> f64 {
        match self {
            Field::Name => 3.0,
            Field::Title => 2.0,
            Field::Description => 1.0,
        }
    }
}

/// The searchable text of one repository.
///
/// Built from the repository name and the descriptions of the images its tags reach, in
/// the order the store visits them: tags in bytewise order, a tagged list's children in
/// list order. Each image counts once; the first title and the first description found
/// are the ones a search hit shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchDocument {
    name: String,
    titles: Vec<String>,
    descriptions: Vec<String>,
}

impl SearchDocument {
    /// The document of repository `name` whose tags reach `images` (in visiting order,
    /// each with a key identifying the image; later occurrences of a key are ignored).
    pub fn new<K: Ord>(name: &str, images: impl IntoIterator<Item = (K, Description)>) -> Self {
        let mut seen = BTreeSet::new();
        let mut titles = Vec::new();
        let mut descriptions = Vec::new();
        for (key, described) in images {
            if seen.insert(key) {
                titles.extend(described.title);
                descriptions.extend(described.description);
            }
        }
        SearchDocument {
            name: name.to_owned(),
            titles,
            descriptions,
        }
    }

    /// The title a hit shows: the first one found.
    pub fn title(&self) -> Option<&str> {
        self.titles.first().map(String::as_str)
    }

    /// The description a hit shows: the first one found.
    pub fn description(&self) -> Option<&str> {
        self.descriptions.first().map(String::as_str)
    }

    /// The texts of one field, in visiting order.
    pub fn texts(&self, field: Field) -> &[String] {
        match field {
            Field::Name => std::slice::from_ref(&self.name),
            Field::Title => &self.titles,
            Field::Description => &self.descriptions,
        }
    }

    /// The [`words`] of one field, in order.
    pub fn words(&self, field: Field) -> Vec<String> {
        self.texts(field)
            .iter()
            .flat_map(|text| words(text))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        super::words(text).collect()
    }

    #[test]
    fn words_split_names_and_prose() {
        assert_eq!(
            words("org.example-App/tool_kit: Über  ALLES!"),
            ["org", "example", "app", "tool", "kit", "über", "alles"]
        );
        assert!(words(" \t-/").is_empty());
    }

    #[test]
    fn weights_order_name_over_title_over_description() {
        assert!(Field::Name.weight() > Field::Title.weight());
        assert!(Field::Title.weight() > Field::Description.weight());
        assert!(Field::ALL.windows(2).all(|w| w[0].weight() > w[1].weight()));
    }

    #[test]
    fn documents_count_each_image_once_and_show_the_first_text() {
        let described = |title: Option<&str>, description: Option<&str>| Description {
            title: title.map(str::to_owned),
            description: description.map(str::to_owned),
        };
        let doc = SearchDocument::new(
            "gnome/Calc-App",
            [
                (1, described(None, Some("First one"))),
                (2, described(Some("Calc"), Some("Second"))),
                (1, described(Some("ignored"), Some("ignored"))),
            ],
        );
        assert_eq!(doc.title(), Some("Calc"));
        assert_eq!(doc.description(), Some("First one"));
        assert_eq!(doc.words(Field::Name), ["gnome", "calc", "app"]);
        assert_eq!(doc.words(Field::Title), ["calc"]);
        assert_eq!(doc.words(Field::Description), ["first", "one", "second"]);
        assert_eq!(doc.texts(Field::Name), ["gnome/Calc-App"]);
        let empty = SearchDocument::new::<u8>("", []);
        assert!(empty.words(Field::Name).is_empty());
        assert_eq!(empty.title(), None);
    }
}
