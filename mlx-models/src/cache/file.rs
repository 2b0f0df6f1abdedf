//! Prompt-cache files in the layout of mlx-lm's `save_prompt_cache`: [`save_prompt_cache`],
//! [`load_prompt_cache`], and the [`StateValue`] tree they hold.

#[allow(unused_imports)]
use super::*;

/// A node of a cache's state: what the reference's `state` properties hold.
#[derive(Debug, Clone)]
pub enum StateValue {
    /// An array.
    Array(Array),
    /// An integer (offsets, sizes).
    Int(i64),
    /// A float.
    Float(f64),
    /// A string (class names inside a `CacheList`).
    Str(String),
    /// An absent array.
    None,
    /// A tuple or list.
    List(Vec<StateValue>),
}

impl StateValue {
    pub(crate) fn into_list(self) -> Option<Vec<StateValue>> {
        match self {
            StateValue::List(l) => Some(l),
            _ => None,
        }
    }

    pub(crate) fn into_array(self) -> std::result::Result<Array, CacheError> {
        match self {
            StateValue::Array(a) => Ok(a),
            other => Err(fmt_err(format!("expected an array, found {other:?}"))),
        }
    }

    pub(crate) fn into_array_opt(self) -> std::result::Result<Option<Array>, CacheError> {
        match self {
            StateValue::None => Ok(None),
            other => other.into_array().map(Some),
        }
    }

    pub(crate) fn into_i32(self) -> std::result::Result<i32, CacheError> {
        match self {
            StateValue::Int(i) => {
                i32::try_from(i).map_err(|_| fmt_err(format!("{i} does not fit i32")))
            }
            other => Err(fmt_err(format!("expected an integer, found {other:?}"))),
        }
    }

    /// Flattens to `("0.1.2", leaf)` pairs like mlx's `tree_flatten`.
    fn flatten(&self, prefix: &str, out: &mut Vec<(String, StateValue)>) {
        match self {
            StateValue::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    let key = if prefix.is_empty() {
                        i.to_string()
                    } else {
                        format!("{prefix}.{i}")
                    };
                    item.flatten(&key, out);
                }
            }
            leaf => out.push((prefix.to_string(), leaf.clone())),
        }
    }
}

/// Rebuilds nested lists from dotted integer paths (mlx's `tree_unflatten` for lists).
fn unflatten(leaves: Vec<(Vec<usize>, StateValue)>) -> std::result::Result<StateValue, CacheError> {
    enum Node {
        Leaf(StateValue),
        Branch(std::collections::BTreeMap<usize, Node>),
    }
    fn insert(
        node: &mut Node,
        path: &[usize],
        v: StateValue,
    ) -> std::result::Result<(), CacheError> {
        let Node::Branch(map) = node else {
            return Err(fmt_err("a key is both a leaf and a branch"));
        };
        match path {
            [] => Err(fmt_err("empty key")),
            [last] => {
                map.insert(*last, Node::Leaf(v));
                Ok(())
            }
            [first, rest @ ..] => insert(
                map.entry(*first)
                    .or_insert_with(|| Node::Branch(Default::default())),
                rest,
                v,
            ),
        }
    }
    fn build(node: Node) -> std::result::Result<StateValue, CacheError> {
        match node {
            Node::Leaf(v) => Ok(v),
            Node::Branch(map) => {
                let mut items = Vec::with_capacity(map.len());
                for (i, (k, child)) in map.into_iter().enumerate() {
                    if k != i {
                        return Err(fmt_err(format!("missing list entry {i}")));
                    }
                    items.push(build(child)?);
                }
                Ok(StateValue::List(items))
            }
        }
    }
    let mut root = Node::Branch(Default::default());
    for (path, v) in leaves {
        insert(&mut root, &path, v)?;
    }
    build(root)
}

fn parse_path(key: &str) -> std::result::Result<Vec<usize>, CacheError> {
    key.split('.')
        .map(|p| {
            p.parse::<usize>()
                .map_err(|_| fmt_err(format!("bad key `{key}`")))
        })
        .collect()
}

/// Saves the caches of a model (and string metadata) to a `.safetensors` file in the layout
/// of mlx-lm's `save_prompt_cache`, so mlx-lm's `load_prompt_cache` reads it too.
pub fn save_prompt_cache(
    path: impl AsRef<Path>,
    caches: &[Cache],
    metadata: &HashMap<String, String>,
) -> std::result::Result<(), CacheError> {
    let mut leaves = Vec::new();
    StateValue::List(caches.iter().map(Cache::state).collect()).flatten("", &mut leaves);
    let mut arrays: Vec<(String, Array)> = Vec::with_capacity(leaves.len());
    let mut meta: HashMap<String, String> = HashMap::new();
    // Entry "2.0" is the empty string that keeps the scalar list from vanishing.
    meta.insert("2.0".into(), String::new());
    let mut n_scalars = 0;
    for (key, leaf) in leaves {
        let (array, kind) = match leaf {
            StateValue::Array(a) => (a, None),
            StateValue::Int(i) => {
                let i = i32::try_from(i).map_err(|_| fmt_err(format!("{i} does not fit int32")))?;
                (Array::from_int(i), Some("scalar"))
            }
            StateValue::Float(f) => (Array::from_f32(f as f32), Some("scalar")),
            StateValue::Str(s) => {
                let codes: Vec<i32> = s.chars().map(|c| c as i32).collect();
                (
                    Array::from_slice(&codes, &[codes.len() as i32]),
                    Some("string"),
                )
            }
            StateValue::None => (Array::from_slice::<f32>(&[], &[0]), Some("none")),
            StateValue::List(_) => unreachable!("flatten yields leaves"),
        };
        if let Some(kind) = kind {
            n_scalars += 1;
            meta.insert(format!("2.{n_scalars}.0"), key.clone());
            meta.insert(format!("2.{n_scalars}.1"), kind.to_string());
        }
        arrays.push((key, array));
    }
    for (i, c) in caches.iter().enumerate() {
        meta.insert(format!("1.{i}"), c.class_name().to_string());
    }
    for (k, v) in metadata {
        meta.insert(format!("0.{k}"), v.clone());
    }
    Array::save_safetensors(arrays.iter().map(|(k, a)| (k.as_str(), a)), &meta, path)?;
    Ok(())
}

/// Loads caches saved by [`save_prompt_cache`] or by mlx-lm's `save_prompt_cache`; returns
/// them with the user metadata.
pub fn load_prompt_cache(
    path: impl AsRef<Path>,
) -> std::result::Result<(Vec<Cache>, HashMap<String, String>), CacheError> {
    let (arrays, meta) = Array::load_safetensors_with_metadata(path)?;
    let mut user = HashMap::new();
    let mut classes: Vec<(usize, String)> = Vec::new();
    let mut scalars: HashMap<usize, (Option<String>, Option<String>)> = HashMap::new();
    for (k, v) in meta {
        let (head, rest) = k
            .split_once('.')
            .ok_or_else(|| fmt_err(format!("bad metadata key `{k}`")))?;
        match head {
            "0" => {
                user.insert(rest.to_string(), v);
            }
            "1" => classes.push((
                rest.parse()
                    .map_err(|_| fmt_err(format!("bad key `{k}`")))?,
                v,
            )),
            "2" => {
                let Some((i, field)) = rest.split_once('.') else {
                    continue;
                };
                let i: usize = i.parse().map_err(|_| fmt_err(format!("bad key `{k}`")))?;
                let slot = scalars.entry(i).or_default();
                match field {
                    "0" => slot.0 = Some(v),
                    "1" => slot.1 = Some(v),
                    _ => return Err(fmt_err(format!("bad key `{k}`"))),
                }
            }
            _ => return Err(fmt_err(format!("bad metadata key `{k}`"))),
        }
    }
    classes.sort();
    let kinds: HashMap<String, String> = scalars
        .into_values()
        .filter_map(|(k, t)| Some((k?, t?)))
        .collect();
    let mut leaves = Vec::with_capacity(arrays.len());
    for (key, array) in arrays {
        let value = match kinds.get(&key).map(String::as_str) {
            None => StateValue::Array(array),
            Some("none") => StateValue::None,
            Some("scalar") => {
                if array.dtype().is_float() {
                    StateValue::Float(
                        array
                            .try_item_cast::<f32>()
                            .map_err(|e| fmt_err(e.to_string()))? as f64,
                    )
                } else {
                    StateValue::Int(
                        array
                            .try_item_cast::<i64>()
                            .map_err(|e| fmt_err(e.to_string()))?,
                    )
                }
            }
            Some("string") => {
                let codes: Vec<i32> = array
                    .as_dtype(Dtype::Int32)?
                    .to_vec_exact::<i32>()
                    .map_err(|e| fmt_err(e.to_string()))?;
                StateValue::Str(
                    codes
                        .into_iter()
                        .filter_map(|c| char::from_u32(c as u32))
                        .collect(),
                )
            }
            Some(other) => return Err(fmt_err(format!("unknown scalar type `{other}`"))),
        };
        leaves.push((parse_path(&key)?, value));
    }
    let states = if leaves.is_empty() {
        Vec::new()
    } else {
        unflatten(leaves)?
            .into_list()
            .ok_or_else(|| fmt_err("the state is not a list"))?
    };
    let mut states: Vec<Option<StateValue>> = states.into_iter().map(Some).collect();
    let mut caches = Vec::with_capacity(classes.len());
    for (i, class) in classes {
        let state = states
            .get_mut(i)
            .and_then(Option::take)
            .unwrap_or(StateValue::List(Vec::new()));
        caches.push(Cache::from_state(&class, state)?);
    }
    Ok((caches, user))
}
