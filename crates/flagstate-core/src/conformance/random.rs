//! A randomized workout: many repositories, shared images and lists, random writes, and
//! random queries, each checked against the reference semantics evaluated over a model
//! of what the store should hold. Seeded, so a failure reproduces.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::fixtures::{ListFixture, image, list, put_image, put_list, repository_name, tag_name};
use super::ok;
use crate::digest::Digest;
use crate::model::{Image, Manifest, Platform, RepositorySnapshot, TagChange};
use crate::name::{RepositoryName, Tag};
use crate::query::IndexQuery;
use crate::response::IndexResponse;
use crate::store::Store;

const OSES: &[&str] = &["linux", "linux", "windows"];
const ARCHES: &[&str] = &["amd64", "arm64", "ppc64le"];
const KEYS: &[&str] = &["org.flatpak.ref", "color", "k:x"];
const VALUES: &[&str] = &["a", "b", "red", "app/x", "Ü<b>&"];
const GLOBS: &[&str] = &["*", "a*", "*b*", "app/*", "?", "1.*", "?atest", "s*"];
const TAGS: &[&str] = &["latest", "stable", "1.0", "1.1", "beta", "Z", "_x"];
const COMPONENTS: &[&str] = &["a", "b", "app", "a0", "x-y", "m.n", "q_r", "z"];

/// What a store should hold, maintained next to it.
#[derive(Default)]
struct Model {
    repositories: BTreeMap<RepositoryName, BTreeMap<Tag, Digest>>,
    manifests: BTreeMap<Digest, Manifest>,
}

impl Model {
    fn expected(&self, query: &IndexQuery) -> Vec<crate::response::RepositoryEntry> {
        self.repositories
            .iter()
            .filter_map(|(name, tags)| {
                query.evaluate_repository(name, tags, |d| self.manifests.get(d))
            })
            .collect()
    }
}

/// A tag target: an image or a list.
enum Target<'a> {
    Image(&'a Image),
    List(&'a ListFixture),
}

impl Target<'_> {
    fn digest(&self) -> &Digest {
        match self {
            Target::Image(i) => &i.digest,
            Target::List(l) => l.digest(),
        }
    }
    fn manifests(&self) -> Vec<Manifest> {
        match self {
            Target::Image(i) => vec![Manifest::Image((*i).clone())],
            Target::List(l) => l.manifests(),
        }
    }
}

fn random_image(rng: &mut StdRng, i: usize) -> Image {
    let mut b = image(&format!("random image {i}"))
        .os(OSES.choose(rng).copied().unwrap_or("linux"))
        .arch(ARCHES.choose(rng).copied().unwrap_or("amd64"));
    for key in KEYS {
        if rng.random_bool(0.5) {
            b = b.label(key, VALUES.choose(rng).copied().unwrap_or("a"));
        }
        if rng.random_bool(0.3) {
            b = b.annotation(key, VALUES.choose(rng).copied().unwrap_or("a"));
        }
    }
    b.build()
}

fn random_list(rng: &mut StdRng, i: usize, images: &[Image]) -> ListFixture {
    let mut b = list(&format!("random list {i}"));
    for _ in 0..rng.random_range(1..=4) {
        let Some(child) = images.choose(rng) else {
            break;
        };
        let stated = match rng.random_range(0..10) {
            0..2 => None,
            2..7 => Some(child.platform.clone()),
            _ => Some(Platform::new(
                OSES.choose(rng).copied().unwrap_or("linux"),
                ARCHES.choose(rng).copied().unwrap_or("amd64"),
            )),
        };
        b = b.child_on(child, stated);
    }
    b.build()
}

fn random_query(rng: &mut StdRng, names: &[String]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for _ in 0..rng.random_range(0..=3) {
        let repeat = rng.random_range(1..=2);
        let key = KEYS.choose(rng).copied().unwrap_or("color");
        let kind = rng.random_range(0..11);
        for _ in 0..repeat {
            let value = VALUES.choose(rng).copied().unwrap_or("a");
            let glob = GLOBS.choose(rng).copied().unwrap_or("*");
            match kind {
                0 => {
                    let name = names.choose(rng).map(String::as_str).unwrap_or("a");
                    out.append_pair("repository", name)
                }
                1 => out.append_pair("tag", TAGS.choose(rng).copied().unwrap_or("latest")),
                2 => out.append_pair("tag:matches", glob),
                3 => out.append_pair("os", OSES.choose(rng).copied().unwrap_or("linux")),
                4 => out.append_pair("architecture", ARCHES.choose(rng).copied().unwrap_or("")),
                5 => out.append_pair(&format!("label:{key}"), value),
                6 => out.append_pair(&format!("label:{key}:exists"), "1"),
                7 => out.append_pair(&format!("label:{key}:matches"), glob),
                8 => out.append_pair(&format!("annotation:{key}"), value),
                9 => out.append_pair(&format!("annotation:{key}:exists"), "1"),
                _ => out.append_pair(&format!("annotation:{key}:matches"), glob),
            };
        }
    }
    out.finish()
}

/// Fifty repositories sharing images and lists, a hundred random writes with the
/// generation checked after each, then three hundred random queries compared byte for
/// byte with the reference; garbage collection must change none of the answers.
pub async fn randomized_queries_match_reference(store: &dyn Store) {
    let mut rng = StdRng::seed_from_u64(0x000f_1a95_7a7e);
    let images: Vec<Image> = (0..30).map(|i| random_image(&mut rng, i)).collect();
    let lists: Vec<ListFixture> = (0..10).map(|i| random_list(&mut rng, i, &images)).collect();
    let mut names: Vec<String> = Vec::new();
    while names.len() < 50 {
        let depth = rng.random_range(1..=3);
        let name = (0..depth)
            .map(|_| COMPONENTS.choose(&mut rng).copied().unwrap_or("a"))
            .collect::<Vec<_>>()
            .join("/");
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let pick = |rng: &mut StdRng| -> Target<'_> {
        if rng.random_bool(0.3) {
            lists.choose(rng).map(Target::List)
        } else {
            images.choose(rng).map(Target::Image)
        }
        .unwrap_or(Target::Image(&images[0]))
    };
    let mut model = Model::default();
    let mut generation = ok(store.generation().await, "generation");
    for step in 0..150 {
        let name = repository_name(names.choose(&mut rng).map_or("a", String::as_str));
        let before = model.repositories.get(&name).cloned();
        let action = if step < 50 {
            0
        } else {
            rng.random_range(0..10)
        };
        let written = match action {
            0..2 => {
                let mut snapshot = RepositorySnapshot {
                    artifacts: Default::default(),
                    name: name.clone(),
                    tags: BTreeMap::new(),
                    manifests: Vec::new(),
                    at: crate::timestamp::Timestamp::now(),
                };
                for _ in 0..rng.random_range(0..=5) {
                    let target = pick(&mut rng);
                    let tag = TAGS.choose(&mut rng).copied().unwrap_or("latest");
                    snapshot.tags.insert(tag_name(tag), target.digest().clone());
                    snapshot.manifests.extend(target.manifests());
                }
                let got = ok(store.replace_repository(&snapshot).await, "replace");
                for m in snapshot.manifests {
                    model.manifests.entry(m.digest().clone()).or_insert(m);
                }
                model.repositories.insert(name.clone(), snapshot.tags);
                got
            }
            2..6 => {
                let target = pick(&mut rng);
                let tag = TAGS.choose(&mut rng).copied().unwrap_or("latest");
                let change = match &target {
                    Target::Image(i) => put_image(&name, tag, i),
                    Target::List(l) => put_list(&name, tag, l),
                };
                let got = ok(store.apply(&change).await, "put");
                for m in target.manifests() {
                    model.manifests.entry(m.digest().clone()).or_insert(m);
                }
                let tags = model.repositories.entry(name.clone()).or_default();
                tags.insert(tag_name(tag), target.digest().clone());
                got
            }
            6..8 => {
                let tag = TAGS.choose(&mut rng).copied().unwrap_or("latest");
                let change = TagChange::DeleteTag {
                    repository: name.clone(),
                    tag: tag_name(tag),
                    at: crate::timestamp::Timestamp::now(),
                };
                if let Some(tags) = model.repositories.get_mut(&name) {
                    tags.remove(tag);
                }
                ok(store.apply(&change).await, "delete tag")
            }
            8 => {
                let digest = pick(&mut rng).digest().clone();
                let change = TagChange::DeleteManifest {
                    repository: name.clone(),
                    digest: digest.clone(),
                    at: crate::timestamp::Timestamp::now(),
                };
                if let Some(tags) = model.repositories.get_mut(&name) {
                    tags.retain(|_, d| *d != digest);
                }
                ok(store.apply(&change).await, "delete manifest")
            }
            _ => {
                model.repositories.remove(&name);
                ok(store.remove_repository(&name).await, "remove")
            }
        };
        let changed = model.repositories.get(&name) != before.as_ref();
        if changed {
            assert!(
                written > generation,
                "step {step} ({name}): change must bump"
            );
        } else {
            assert_eq!(
                written, generation,
                "step {step} ({name}): no change, no bump"
            );
        }
        generation = written;
    }
    let listed = ok(store.repositories().await, "repositories");
    let expected: Vec<&RepositoryName> = model.repositories.keys().collect();
    assert_eq!(listed.iter().collect::<Vec<_>>(), expected);
    for (name, tags) in &model.repositories {
        let got = ok(store.repository_tags(name).await, "repository_tags");
        assert_eq!(got.as_ref(), Some(tags), "tags of {name}");
    }
    let mut queries: Vec<String> = vec![
        String::new(),
        "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest".into(),
    ];
    queries.extend((0..300).map(|_| random_query(&mut rng, &names)));
    let mut answers = Vec::new();
    for raw in &queries {
        let query = IndexQuery::parse(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        let got = ok(store.query(&query).await, raw);
        let want = model.expected(&query);
        let got = IndexResponse::new("/", got).to_json();
        let want = IndexResponse::new("/", want).to_json();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "query {raw:?}"
        );
        answers.push(got);
    }
    ok(store.collect_garbage().await, "gc");
    assert_eq!(ok(store.generation().await, "generation"), generation);
    for (raw, before) in queries.iter().zip(answers) {
        let query = IndexQuery::parse(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        let got = ok(store.query(&query).await, raw);
        let got = IndexResponse::new("/", got).to_json();
        assert_eq!(
            got, before,
            "query {raw:?} changed after garbage collection"
        );
    }
}
