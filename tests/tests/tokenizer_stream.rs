//! Tokenizer loading and the streaming detokenizer, on tiny tokenizers built here with the
//! `tokenizers` API: byte-level BPE (GPT-2 / Llama 3 style) and SentencePiece-style BPE with
//! byte fallback (Llama 2 style), with multi-byte characters split across tokens.

use std::path::Path;

use mlx_models::tokenizer::{Tokenizer, TokenizerError};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

/// The byte-level alphabet character of a byte (GPT-2's mapping).
fn byte_char(b: u8) -> char {
    let printable = |b: u8| {
        (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    if printable(b) {
        return b as char;
    }
    let mut n = 0u32;
    for x in 0..=255u8 {
        if !printable(x) {
            if x == b {
                return char::from_u32(256 + n).unwrap();
            }
            n += 1;
        }
    }
    unreachable!()
}

fn chars(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_char(b)).collect()
}

/// A byte-level BPE whose merges make tokens that straddle character boundaries.
fn write_byte_level(dir: &Path) -> tokenizers::Tokenizer {
    let mut vocab = Vocab::default();
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort();
    for c in &alphabet {
        let id = vocab.len() as u32;
        vocab.insert(c.to_string(), id);
    }
    // "世" = E4 B8 96, "界" = E7 95 8C: a token [96 E7] ends one character and starts the next.
    // "é" = C3 A9 is one token; "🎉" = F0 9F 8E 89 is split [F0 9F] [8E] [89].
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (vec![0x96], vec![0xE7]),
        (vec![0xC3], vec![0xA9]),
        (vec![0xF0], vec![0x9F]),
        (b"h".to_vec(), vec![0xC3, 0xA9]),
        (b" ".to_vec(), b"w".to_vec()),
    ];
    let mut merges = Vec::new();
    for (a, b) in pairs {
        let (a, b) = (chars(&a), chars(&b));
        let id = vocab.len() as u32;
        vocab.insert(format!("{a}{b}"), id);
        merges.push((a, b));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.add_special_tokens(&[AddedToken::from("<|eot|>", true)]);
    tok.save(dir.join("tokenizer.json"), false).unwrap();
    tok
}

/// A SentencePiece-style BPE with byte fallback and the Llama 2 decoder.
fn write_spm(dir: &Path) -> tokenizers::Tokenizer {
    let mut vocab = Vocab::default();
    for t in ["<unk>", "<s>", "</s>"] {
        let id = vocab.len() as u32;
        vocab.insert(t.to_string(), id);
    }
    for b in 0..=255u32 {
        let id = vocab.len() as u32;
        vocab.insert(format!("<0x{b:02X}>"), id);
    }
    for t in ["▁", "h", "l", "o", "▁h", "ll", "w", "r", "d"] {
        let id = vocab.len() as u32;
        vocab.insert(t.to_string(), id);
    }
    let merges = vec![
        ("▁".to_string(), "h".to_string()),
        ("l".to_string(), "l".to_string()),
    ];
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token("<unk>".into())
        .byte_fallback(true)
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(bpe);
    let decoder = Sequence::new(vec![
        DecoderWrapper::Replace(Replace::new("▁", " ").unwrap()),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
        DecoderWrapper::Strip(Strip::new(' ', 1, 0)),
    ]);
    tok.with_decoder(Some(decoder));
    tok.save(dir.join("tokenizer.json"), false).unwrap();
    tok
}

/// Streams `ids` and checks every emitted piece: no replacement character, the pieces add up
/// to the full decode, and some tokens were held back (they ended inside a character).
fn check_stream(tok: &Tokenizer, ids: &[u32], expected: &str) {
    let mut d = tok.detokenizer();
    let mut pieces = Vec::new();
    for &id in ids {
        let piece = d.add_token(id).unwrap();
        assert!(
            !piece.contains('\u{FFFD}'),
            "broken UTF-8 emitted: {piece:?} after token {id}"
        );
        pieces.push(piece);
    }
    assert!(
        pieces.iter().any(|p| p.is_empty()),
        "expected some held-back tokens"
    );
    pieces.push(d.finalize().unwrap());
    let joined: String = pieces.concat();
    assert_eq!(joined, expected);
    assert_eq!(d.text(), expected);
    assert_eq!(tok.decode(ids, false).unwrap(), expected);
}

#[test]
fn byte_level_multibyte_characters_split_across_tokens() {
    let dir = tempfile::tempdir().unwrap();
    write_byte_level(dir.path());
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    let text = "hé 世界 world 🎉!";
    let ids = tok.encode(text, false).unwrap();
    // Some token holds bytes of two different characters, some hold part of one.
    let straddle = tok.inner().token_to_id(&chars(&[0x96, 0xE7])).unwrap();
    assert!(ids.contains(&straddle), "{ids:?}");
    check_stream(&tok, &ids, text);
    // Token by token: nothing is emitted while the text ends inside a character.
    let mut d = tok.detokenizer();
    let world: Vec<u32> = tok.encode("世界é", false).unwrap();
    assert_eq!(world.len(), 6, "{world:?}");
    let out: Vec<String> = world.iter().map(|&t| d.add_token(t).unwrap()).collect();
    assert_eq!(out, vec!["", "", "", "", "世界", "é"]);
}

#[test]
fn spm_byte_fallback_stream() {
    let dir = tempfile::tempdir().unwrap();
    let raw = write_spm(dir.path());
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    let id = |t: &str| raw.token_to_id(t).unwrap();
    let byte = |b: u8| id(&format!("<0x{b:02X}>"));
    // "▁hello▁wörld▁世" with ö and 世 as byte-fallback tokens.
    let ids = vec![
        id("▁h"),
        byte(b'e'),
        id("ll"),
        id("o"),
        id("▁"),
        id("w"),
        byte(0xC3),
        byte(0xB6),
        id("r"),
        id("l"),
        id("d"),
        id("▁"),
        byte(0xE4),
        byte(0xB8),
        byte(0x96),
    ];
    // The first token's leading space is stripped, as the reference's SPM detokenizer does.
    check_stream(&tok, &ids, "hello wörld 世");
}

#[test]
fn truncated_character_at_the_end_is_flushed_by_finalize() {
    let dir = tempfile::tempdir().unwrap();
    write_byte_level(dir.path());
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    let mut ids = tok.encode("ok", false).unwrap();
    ids.push(tok.inner().token_to_id(&chars(&[0xF0, 0x9F])).unwrap());
    let mut d = tok.detokenizer();
    let streamed: String = ids.iter().map(|&t| d.add_token(t).unwrap()).collect();
    assert_eq!(streamed, "ok");
    let rest = d.finalize().unwrap();
    assert_eq!(
        format!("{streamed}{rest}"),
        tok.decode(&ids, false).unwrap()
    );
    d.reset();
    assert_eq!(d.text(), "");
    assert!(d.tokens().is_empty());
}

#[test]
fn last_segment_like_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    write_byte_level(dir.path());
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    let mut d = tok.detokenizer();
    for t in tok.encode("hé ", false).unwrap() {
        d.add_token(t).unwrap();
    }
    let first = d.last_segment();
    assert_eq!(d.last_segment(), "");
    for t in tok.encode("world", false).unwrap() {
        d.add_token(t).unwrap();
    }
    d.finalize().unwrap();
    assert_eq!(format!("{first}{}", d.last_segment()), "hé world");
}

#[test]
fn eos_ids_from_configs_and_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let raw = write_byte_level(dir.path());
    let eot = raw.token_to_id("<|eot|>").unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"eos_token": {"content": "<|eot|>", "special": true}, "bos_token": null}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"eos_token_id": 2}"#).unwrap();
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tok.eos_token_ids().iter().copied().collect::<Vec<_>>(), {
        let mut v = vec![2, eot];
        v.sort();
        v
    });
    // generation_config.json wins over config.json; the tokenizer's eos_token is always added.
    std::fs::write(
        dir.path().join("generation_config.json"),
        r#"{"eos_token_id": [5, 6]}"#,
    )
    .unwrap();
    let mut tok = Tokenizer::from_dir(dir.path()).unwrap();
    let mut expected = vec![5, 6, eot];
    expected.sort();
    assert_eq!(
        tok.eos_token_ids().iter().copied().collect::<Vec<_>>(),
        expected
    );
    assert_eq!(tok.add_eos_token("9").unwrap(), 9);
    assert!(tok.eos_token_ids().contains(&9));
    assert!(tok.add_eos_token("<|nope|>").is_err());
}

#[test]
fn missing_or_broken_tokenizer_files() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Tokenizer::from_dir(dir.path()).unwrap_err(),
        TokenizerError::Missing(_)
    ));
    std::fs::write(dir.path().join("tokenizer.json"), "{\"model\": ").unwrap();
    assert!(matches!(
        Tokenizer::from_dir(dir.path()).unwrap_err(),
        TokenizerError::Load { .. }
    ));
    write_byte_level(dir.path());
    std::fs::write(dir.path().join("tokenizer_config.json"), "{").unwrap();
    assert!(matches!(
        Tokenizer::from_dir(dir.path()).unwrap_err(),
        TokenizerError::Config { .. }
    ));
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"chat_template": "{% if %}"}"#,
    )
    .unwrap();
    let err = Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, TokenizerError::Template(_)), "{err:?}");
}
