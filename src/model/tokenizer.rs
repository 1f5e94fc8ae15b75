//! The Gemma tokenizer as a `tokenizers::Tokenizer`, from `tokenizer.json` or rebuilt from
//! GGUF metadata (SentencePiece BPE: scores become merge ranks, byte fallback, spaces as
//! U+2581, no added prefix space).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::replace::Replace;
use tokenizers::{AddedToken, DecoderWrapper, Tokenizer};

use super::control_tokens::ControlTokens;
use super::error::{ModelError, Result};
use super::token_reach::TokenReach;

const SPACE_MARK: &str = "\u{2581}";

/// SentencePiece token types as GGUF stores them.
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_BYTE: i32 = 6;

/// The tokenizer's data as GGUF metadata holds it.
pub struct GgufVocab {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
    bos: u32,
    eos: u32,
    unk: usize,
}

impl GgufVocab {
    /// Reads `tokenizer.ggml.*` metadata, naming `path` when something is missing.
    pub fn read(content: &gguf_file::Content, path: &str) -> Result<Self> {
        let md = &content.metadata;
        let corrupt = |what: &str| ModelError::Corrupt {
            path: path.to_string(),
            reason: format!("tokenizer metadata: {what}"),
        };
        let array = |key: &str| {
            md.get(key)
                .and_then(|v| v.to_vec().ok())
                .ok_or_else(|| corrupt(key))
        };
        let tokens: Vec<String> = array("tokenizer.ggml.tokens")?
            .iter()
            .map(|v| v.to_string().cloned())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| corrupt("tokenizer.ggml.tokens holds a non-string"))?;
        let scores: Vec<f32> = array("tokenizer.ggml.scores")?
            .iter()
            .map(|v| v.to_f32().unwrap_or(0.0))
            .collect();
        let types: Vec<i32> = array("tokenizer.ggml.token_type")?
            .iter()
            .map(|v| v.to_i32().unwrap_or(1))
            .collect();
        if scores.len() != tokens.len() || types.len() != tokens.len() {
            return Err(corrupt("tokens, scores and types differ in length"));
        }
        let id_of = |key: &str| md.get(key).and_then(|v| v.to_u32().ok());
        let bos = id_of("tokenizer.ggml.bos_token_id")
            .ok_or_else(|| corrupt("tokenizer.ggml.bos_token_id"))?;
        let eos = id_of("tokenizer.ggml.eos_token_id")
            .ok_or_else(|| corrupt("tokenizer.ggml.eos_token_id"))?;
        let unk = id_of("tokenizer.ggml.unknown_token_id").unwrap_or(3) as usize;

        Ok(Self {
            tokens,
            scores,
            types,
            bos,
            eos,
            unk,
        })
    }
}

/// Text to token ids and back, with Gemma's special tokens.
pub struct GemmaTokenizer {
    inner: Tokenizer,
    /// Control tokens (`<start_of_turn>`, ...), found in a text when `encode` is asked to.
    control_tokens: ControlTokens,
    /// How far one token can reach in a text (see [`Self::fewest_tokens`]).
    reach: TokenReach,
    bos: u32,
    end_of_generation: Vec<u32>,
}

impl GemmaTokenizer {
    /// Rebuilds the tokenizer from a vocabulary read out of GGUF metadata (the slow part of
    /// loading a tokenizer, which [`GgufVocab`] lets run beside the weight loading).
    pub fn from_vocab(vocab: GgufVocab) -> Result<Self> {
        let GgufVocab {
            tokens,
            scores,
            types,
            bos,
            eos,
            unk,
        } = vocab;
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| (t.clone(), id as u32))
            .collect();
        let merges = merges_from_scores(&vocab, &tokens, &scores, &types);
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .unk_token(tokens.get(unk).cloned().unwrap_or_else(|| "<unk>".into()))
            .byte_fallback(true)
            .fuse_unk(true)
            .build()
            .map_err(tokenizer_error)?;
        let mut inner = Tokenizer::new(bpe);
        let space = Replace::new(" ", SPACE_MARK).map_err(tokenizer_error)?;
        inner
            .with_normalizer(Some(space))
            .map_err(tokenizer_error)?;
        let unspace = Replace::new(SPACE_MARK, " ").map_err(tokenizer_error)?;
        inner.with_decoder(Some(Sequence::new(vec![
            DecoderWrapper::Replace(unspace),
            DecoderWrapper::ByteFallback(ByteFallback::new()),
            DecoderWrapper::Fuse(Fuse::new()),
        ])));
        // User-defined pieces (whitespace runs, image markers) are matched in the raw text
        // before BPE, as SentencePiece does; control tokens only on request.
        let token_of_type = |wanted: i32, special: bool| -> Vec<AddedToken> {
            tokens
                .iter()
                .zip(&types)
                .filter(|&(_, &ty)| ty == wanted)
                .map(|(t, _)| AddedToken::from(t.clone(), special).normalized(false))
                .collect()
        };
        inner
            .add_tokens(token_of_type(TYPE_USER_DEFINED, false))
            .map_err(tokenizer_error)?;
        inner
            .add_special_tokens(token_of_type(TYPE_CONTROL, true))
            .map_err(tokenizer_error)?;
        let control = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|&(_, (_, &ty))| ty == TYPE_CONTROL)
            .map(|(id, (t, _))| (t.clone(), id as u32))
            .collect();
        Ok(Self::finish(inner, control, bos, eos))
    }

    /// Loads `tokenizer.json` (Hugging Face format); BOS/EOS ids come from its vocabulary.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(|e| ModelError::Corrupt {
            path: path.display().to_string(),
            reason: format!("not a tokenizer.json: {e}"),
        })?;
        let control: HashMap<String, u32> = inner
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(&id, t)| (t.content.clone(), id))
            .collect();
        let bos = control.get("<bos>").copied().unwrap_or(2);
        let eos = control.get("<eos>").copied().unwrap_or(1);
        Ok(Self::finish(inner, control, bos, eos))
    }

    fn finish(mut inner: Tokenizer, control: HashMap<String, u32>, bos: u32, eos: u32) -> Self {
        // Special-token text is plain text unless `encode` is asked to parse it.
        inner.set_encode_special_tokens(true);
        let mut end_of_generation = vec![eos];
        end_of_generation.extend(control.get("<end_of_turn>"));
        let reach = TokenReach::new(inner.get_vocab(true).keys().map(String::as_str));
        Self {
            inner,
            control_tokens: ControlTokens::new(&control),
            reach,
            bos,
            end_of_generation,
        }
    }

    /// Token ids of `text`; with `add_bos` a leading BOS; with `parse_special` control
    /// tokens written in the text (`<start_of_turn>`) become their ids.
    pub fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if add_bos {
            ids.push(self.bos);
        }
        let mut rest = text;
        while !rest.is_empty() {
            let (plain, special) = if parse_special {
                self.split_at_control(rest)
            } else {
                (rest, None)
            };
            if !plain.is_empty() {
                let encoding = self.inner.encode(plain, false).map_err(tokenizer_error)?;
                ids.extend_from_slice(encoding.get_ids());
            }
            rest = &rest[plain.len()..];
            if let Some((id, len)) = special {
                ids.push(id);
                rest = &rest[len..];
            }
        }
        Ok(ids)
    }

    /// Splits off the text before the first control token, and that token's id and length.
    fn split_at_control<'t>(&self, text: &'t str) -> (&'t str, Option<(u32, usize)>) {
        match self.control_tokens.first(text) {
            Some(found) => (&text[..found.start], Some((found.id, found.len))),
            None => (text, None),
        }
    }

    /// A lower bound of the tokens `text` encodes to, without encoding it (see
    /// [`TokenReach`]): what lets a server refuse a prompt that cannot fit its context
    /// before spending CPU on it.
    pub fn fewest_tokens(&self, text: &str) -> usize {
        self.reach.fewest_tokens(text)
    }

    /// Text of `ids`, control tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(tokenizer_error)
    }

    /// The bytes one token stands for: a byte-fallback token (`<0xE6>`) its byte, which may
    /// be part of a character; any other its piece with U+2581 as a space; a control token
    /// its name (`<end_of_turn>`).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let Some(piece) = self.inner.id_to_token(id) else {
            return Vec::new();
        };
        match fallback_byte(&piece) {
            Some(byte) => vec![byte],
            None => piece.replace(SPACE_MARK, " ").into_bytes(),
        }
    }

    /// Writes the tokenizer as a Hugging Face `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner.save(path, false).map_err(tokenizer_error)
    }

    /// The beginning-of-sequence id.
    pub fn bos(&self) -> u32 {
        self.bos
    }

    /// Whether generation stops at `id` (`<eos>`, `<end_of_turn>`).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.contains(&id)
    }
}

/// The byte of a byte-fallback piece (`<0xE6>`).
fn fallback_byte(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

fn tokenizer_error(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

/// SentencePiece BPE merges: a pair may merge when its concatenation is a token, and the
/// pair whose result scores highest merges first. Ranks are ordered by that score.
fn merges_from_scores(
    vocab: &Vocab,
    tokens: &[String],
    scores: &[f32],
    types: &[i32],
) -> Vec<(String, String)> {
    // A byte-fallback token (`<0x0A>`) is never one side of a merge.
    let lookup = |piece: &str| {
        vocab
            .get(piece)
            .map(|&id| id as usize)
            .filter(|&id| types[id] != TYPE_BYTE)
    };
    // Candidate pairs of a range of tokens: (score, merged id, left id, right id).
    let candidates = |ids: std::ops::Range<usize>| {
        let mut found = Vec::new();
        for id in ids.filter(|&id| types[id] != TYPE_BYTE) {
            let token = &tokens[id];
            for (split, _) in token.char_indices().skip(1) {
                let (left, right) = token.split_at(split);
                if let (Some(l), Some(r)) = (lookup(left), lookup(right)) {
                    found.push((scores[id], id, l, r));
                }
            }
        }
        found
    };
    // Two halves on two threads: this is most of the time it takes to build the tokenizer.
    let half = tokens.len() / 2;
    let mut merges = std::thread::scope(|scope| {
        let upper = scope.spawn(|| candidates(half..tokens.len()));
        let mut lower = candidates(0..half);
        lower.extend(upper.join().expect("the merge scan does not panic"));
        lower
    });
    // Highest score first; among equal scores the leftmost split merges first.
    merges.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    merges
        .into_iter()
        .map(|(_, _, l, r)| (tokens[l].clone(), tokens[r].clone()))
        .collect()
}
