//! Decode an audio file (WAV, FLAC, MP3, OGG/Vorbis) to mono `f32` with symphonia.
//!
//! Integer PCM is scaled exactly like libsndfile / `soundfile` and torchaudio do (`s / 2^(bits-1)`,
//! unsigned 8-bit re-centred first), so a PCM16 WAV gives bit-identical floats to the reference's
//! loader. Channels are **averaged** to mono. The reference instead flattens `[channels, samples]`
//! with `reshape(-1)`, i.e. it plays the channels one after the other, which doubles the duration
//! of a stereo file and puts the right channel in the second half; averaging keeps the timing.

use std::fs::File;
use std::io::ErrorKind;
use std::panic::AssertUnwindSafe;
use std::path::Path;

use symphonia::core::audio::{AudioBufferRef, SampleBuffer, Signal};
use symphonia::core::codecs::{
    CodecParameters, CodecType, Decoder, DecoderOptions, CODEC_TYPE_FLAC, CODEC_TYPE_NULL,
    CODEC_TYPE_PCM_F32BE, CODEC_TYPE_PCM_F32LE, CODEC_TYPE_PCM_F64BE, CODEC_TYPE_PCM_F64LE,
    CODEC_TYPE_PCM_S16BE, CODEC_TYPE_PCM_S16LE, CODEC_TYPE_PCM_S24BE, CODEC_TYPE_PCM_S24LE,
    CODEC_TYPE_PCM_S32BE, CODEC_TYPE_PCM_S32LE, CODEC_TYPE_PCM_S8, CODEC_TYPE_PCM_U8,
    CODEC_TYPE_VORBIS,
};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::error::{AdiffError, Result};

/// A whole file decoded and mixed down to mono.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedAudio {
    /// Mono samples, the per-frame mean of all channels, nominally in `[-1, 1]`.
    pub samples: Vec<f32>,
    /// Sample rate of the file in Hz.
    pub sample_rate: u32,
    /// Number of channels in the file (before averaging).
    pub channels: usize,
}

/// Largest sample magnitude accepted: 60 dB above full scale, far past any real clipping, far
/// below what overflows the log-mel's power spectrum.
pub const MAX_SAMPLE_MAGNITUDE: f32 = 1000.0;

/// Decodes every packet of the file's first audio track and averages its channels to mono.
///
/// A packet that fails to decode (`DecodeError`) is skipped, as symphonia recommends for
/// recoverable corruption; a file in which no packet decodes is an error. Every failure is a
/// one-line [`AdiffError::Audio`] naming the file: missing or empty file, unrecognised or corrupt
/// container, unsupported codec, lossless data shorter than its header declares, no samples, or
/// NaN/Inf samples.
pub fn decode_file(path: &Path) -> Result<DecodedAudio> {
    let mut stream = Stream::open(path)?;
    let mut samples = Vec::new();
    while stream.next_into(&mut samples)? {}
    Ok(DecodedAudio {
        samples,
        sample_rate: stream.sample_rate()?,
        channels: stream.channels.unwrap_or(1),
    })
}

/// Runs `f` so that a panic inside symphonia's demuxers and decoders (they parse untrusted
/// bytes) becomes an error naming the file instead of bringing the process down, with the
/// panic's own message and backtrace kept off the terminal: the error says it all.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    quiet_panics_hook();
    QUIET_PANICS.with(|q| q.set(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    QUIET_PANICS.with(|q| q.set(false));
    result.unwrap_or_else(|_| {
        Err(AdiffError::audio(
            path,
            "corrupt audio data (the decoder crashed on it)",
        ))
    })
}

thread_local! {
    /// Set while this thread runs a decoder whose panics [`guarded`] turns into errors.
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs (once) a panic hook that stays silent for panics caught by [`guarded`] and hands
/// every other panic to the hook that was there before.
fn quiet_panics_hook() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
}

/// An audio file decoded packet by packet and mixed down to mono, so that a caller who needs
/// part of a long file holds only that part ([`decode_file`] collects every packet). The checks
/// of [`decode_file`] apply to every sample read; those that need the whole stream (truncation,
/// no samples at all) run when the stream ends.
pub struct Stream {
    path: std::path::PathBuf,
    /// symphonia's demuxer and decoder; None for a 16-bit mono PCM WAV held in memory, which
    /// `pcm` reads directly.
    format: Option<Box<dyn FormatReader>>,
    decoder: Option<Box<dyn Decoder>>,
    pcm: Option<Pcm16>,
    track_id: u32,
    params: CodecParameters,
    codec_name: String,
    interleaved: Option<SampleBuffer<f32>>,
    sample_rate: Option<u32>,
    channels: Option<usize>,
    decoded_packets: usize,
    skipped_packets: usize,
    last_skip_reason: String,
    /// Sample frames decoded, and mono samples handed out (fewer once a Vorbis stream reaches
    /// its declared end).
    frames: u64,
    emitted: u64,
    ended: bool,
}

impl Stream {
    /// Opens the file and sets up the decoder of its first audio track.
    pub fn open(path: &Path) -> Result<Self> {
        guarded(path, || Self::open_unguarded(path))
    }

    /// Opens audio held in memory (an upload), named `name` in errors; the name's extension, if
    /// any, is the container hint a file's would be.
    pub fn open_bytes(name: &Path, bytes: std::sync::Arc<[u8]>) -> Result<Self> {
        guarded(name, || {
            if bytes.is_empty() {
                return Err(AdiffError::audio(name, "empty file (0 bytes)"));
            }
            if let Some(pcm) = Pcm16::parse(bytes.clone()) {
                return Ok(Self::from_pcm(name, pcm));
            }
            Self::from_source(name, Box::new(std::io::Cursor::new(bytes)))
        })
    }

    fn open_unguarded(path: &Path) -> Result<Self> {
        let err = |msg: String| AdiffError::audio(path, msg);
        if path.as_os_str() == "-" {
            return Err(err(
                "reading audio from standard input is not supported: give a file path".into(),
            ));
        }
        let file = File::open(path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => err("file not found".into()),
            _ => err(format!("cannot open: {e}")),
        })?;
        let meta = file
            .metadata()
            .map_err(|e| err(format!("cannot read file metadata: {e}")))?;
        if meta.is_dir() {
            return Err(err("is a directory, not an audio file".into()));
        }
        if meta.len() == 0 {
            return Err(err("empty file (0 bytes)".into()));
        }

        Self::from_source(path, Box::new(file))
    }

    /// Probes the container of `source` (named `path` in errors) and sets up its first audio
    /// track's decoder.
    fn from_source(path: &Path, source: Box<dyn symphonia::core::io::MediaSource>) -> Result<Self> {
        let err = |msg: String| AdiffError::audio(path, msg);
        let mss = MediaSourceStream::new(source, Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        // Gapless: trim MP3/Vorbis encoder delay and padding like ffmpeg (torchaudio's backend)
        // does.
        let format_opts = FormatOptions {
            enable_gapless: true,
            ..Default::default()
        };
        let probed = symphonia::default::get_probe()
            .format(&hint, mss, &format_opts, &MetadataOptions::default())
            .map_err(|e| err(format!("unrecognised or corrupt audio container ({e})")))?;
        let format = probed.format;

        let track = format
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or_else(|| err("no audio track".into()))?;
        let track_id = track.id;
        let params = track.codec_params.clone();
        let codec_name = symphonia::default::get_codecs()
            .get_codec(params.codec)
            .map(|d| d.short_name.to_string())
            .unwrap_or_else(|| format!("{}", params.codec));
        let decoder = symphonia::default::get_codecs()
            .make(&params, &DecoderOptions::default())
            .map_err(|e| match e {
                SymError::Unsupported(what) => err(format!("unsupported codec ({what})")),
                other => err(format!("cannot set up the {codec_name} decoder ({other})")),
            })?;
        Ok(Self::with_parts(
            path,
            Source::Symphonia(format, decoder),
            track_id,
            params,
            codec_name,
        ))
    }

    /// A stream at its start, reading `source`.
    fn with_parts(
        path: &Path,
        source: Source,
        track_id: u32,
        params: CodecParameters,
        codec_name: String,
    ) -> Self {
        let (format, decoder, pcm) = match source {
            Source::Symphonia(f, d) => (Some(f), Some(d), None),
            Source::Pcm(p) => (None, None, Some(p)),
        };
        Self {
            path: path.to_path_buf(),
            format,
            decoder,
            pcm,
            track_id,
            sample_rate: params.sample_rate,
            channels: params.channels.map(|c| c.count()),
            params,
            codec_name,
            interleaved: None,
            decoded_packets: 0,
            skipped_packets: 0,
            last_skip_reason: String::new(),
            frames: 0,
            emitted: 0,
            ended: false,
        }
    }

    /// A stream over a 16-bit mono PCM WAV in memory, read without symphonia.
    fn from_pcm(path: &Path, pcm: Pcm16) -> Self {
        let frames = (pcm.end - pcm.pos) as u64 / 2;
        let params = CodecParameters::new()
            .for_codec(CODEC_TYPE_PCM_S16LE)
            .with_sample_rate(pcm.sample_rate)
            .with_channels(symphonia::core::audio::Channels::FRONT_LEFT)
            .with_bits_per_coded_sample(16)
            .with_n_frames(frames)
            .clone();
        Self::with_parts(path, Source::Pcm(pcm), 0, params, "pcm_s16le".into())
    }

    /// [`Self::next_into`] for [`Pcm16`]: up to [`PCM_CHUNK`] samples, `s / 32768` as
    /// symphonia converts them (16-bit samples are finite and within full scale: nothing to
    /// check).
    fn next_pcm(&mut self, out: &mut Vec<f32>) -> Result<bool> {
        let Some(pcm) = self.pcm.as_mut() else {
            return Ok(false);
        };
        if pcm.pos >= pcm.end {
            self.ended = true;
            self.finish()?;
            return Ok(false);
        }
        let stop = pcm.end.min(pcm.pos + 2 * PCM_CHUNK);
        let bytes = &pcm.bytes[pcm.pos..stop];
        out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| pcm16_to_f32(i16::from_le_bytes([b[0], b[1]]))),
        );
        let n = (stop - pcm.pos) as u64 / 2;
        pcm.pos = stop;
        self.decoded_packets += 1;
        self.frames += n;
        self.emitted += n;
        Ok(true)
    }

    /// The file's sample rate (declared by the container, or seen in the first packet).
    pub fn sample_rate(&self) -> Result<u32> {
        self.sample_rate
            .filter(|&sr| sr > 0)
            .ok_or_else(|| AdiffError::audio(&self.path, "stream has no sample rate"))
    }

    /// The number of sample frames, when the container's count is exact (lossless codecs, not
    /// a streaming length); lossy containers only estimate theirs.
    pub fn exact_frames(&self) -> Option<u64> {
        self.params
            .n_frames
            .filter(|&n| is_lossless(self.params.codec) && !is_streaming_length(&self.params, n))
    }

    /// Appends the next packet's mono samples to `out`; false once the stream has ended (its
    /// end-of-stream checks passed).
    pub fn next_into(&mut self, out: &mut Vec<f32>) -> Result<bool> {
        if self.ended {
            return Ok(false);
        }
        let path = self.path.clone();
        guarded(&path, || self.next_unguarded(out))
    }

    fn next_unguarded(&mut self, out: &mut Vec<f32>) -> Result<bool> {
        if self.pcm.is_some() {
            return self.next_pcm(out);
        }
        let path = self.path.clone();
        let err = |msg: String| AdiffError::audio(&path, msg);
        loop {
            let (Some(format), Some(decoder)) = (self.format.as_mut(), self.decoder.as_mut())
            else {
                return Err(err("internal error: no decoder".into()));
            };
            let packet = match format.next_packet() {
                Ok(p) => p,
                // The documented end-of-stream signal.
                Err(SymError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                    self.ended = true;
                    self.finish()?;
                    return Ok(false);
                }
                Err(SymError::ResetRequired) => {
                    return Err(err("stream changes its format midway (unsupported)".into()))
                }
                Err(e) => return Err(err(format!("corrupt audio data ({e})"))),
            };
            if packet.track_id() != self.track_id {
                continue;
            }
            let decoded = match decoder.decode(&packet) {
                Ok(d) => d,
                // Recoverable: a damaged packet; skip it and keep going.
                Err(SymError::DecodeError(reason)) => {
                    self.skipped_packets += 1;
                    self.last_skip_reason = reason.to_string();
                    continue;
                }
                Err(SymError::IoError(e)) => {
                    self.skipped_packets += 1;
                    self.last_skip_reason = e.to_string();
                    continue;
                }
                Err(e) => return Err(err(format!("{} decoder failed ({e})", self.codec_name))),
            };
            self.decoded_packets += 1;
            let spec = *decoded.spec();
            let n_ch = spec.channels.count();
            if n_ch == 0 {
                return Err(err("stream declares zero channels".into()));
            }
            match (self.sample_rate, self.channels) {
                (Some(sr), Some(ch)) if sr != spec.rate || ch != n_ch => {
                    return Err(err(format!(
                        "stream changes from {ch} ch @ {sr} Hz to {n_ch} ch @ {} Hz midway \
                         (unsupported)",
                        spec.rate
                    )))
                }
                _ => {
                    self.sample_rate = Some(spec.rate);
                    self.channels = Some(n_ch);
                }
            }
            let n_frames = decoded.frames();
            if n_frames == 0 {
                continue;
            }
            self.frames += n_frames as u64;
            let first = out.len();
            match &decoded {
                // The common case (16-bit mono PCM, the demo's clips) straight from the
                // decoder's buffer, converted as symphonia's `IntoSample` does (`s / 32768`,
                // exact): no interleaved copy in between.
                AudioBufferRef::S16(b) if n_ch == 1 => {
                    out.extend(b.chan(0).iter().map(|&s| pcm16_to_f32(s)))
                }
                _ => {
                    // Reuse one interleaved f32 buffer; grow it only when a packet is larger
                    // than any before.
                    let buf = match &mut self.interleaved {
                        Some(b) if b.capacity() >= n_frames * n_ch => b,
                        slot => slot.insert(SampleBuffer::<f32>::new(n_frames as u64, spec)),
                    };
                    buf.copy_interleaved_ref(decoded);
                    // [n_frames * n_ch] interleaved -> [n_frames] mean over channels (f64 sum,
                    // exact for mono).
                    out.extend(buf.samples().chunks_exact(n_ch).map(|frame| {
                        if n_ch == 1 {
                            frame[0]
                        } else {
                            (frame.iter().map(|&s| s as f64).sum::<f64>() / n_ch as f64) as f32
                        }
                    }));
                }
            }
            // A Vorbis stream ends exactly at its last granule position (Vorbis I spec, A.2),
            // but symphonia 0.5 does not trim the final block's padding when it cannot see the
            // previous page's granule position (short files); cut to the declared end like
            // libvorbis does.
            if let Some(declared) = self.params.n_frames {
                if self.params.codec == CODEC_TYPE_VORBIS {
                    let room = declared.saturating_sub(self.emitted) as usize;
                    out.truncate(first + room.min(out.len() - first));
                }
            }
            self.check(&out[first..], self.emitted)?;
            self.emitted += (out.len() - first) as u64;
            return Ok(true);
        }
    }

    /// Non-finite samples, and samples far beyond full scale, are refused wherever they are.
    fn check(&self, samples: &[f32], first_frame: u64) -> Result<()> {
        let err = |msg: String| AdiffError::audio(&self.path, msg);
        if let Some(i) = samples.iter().position(|s| !s.is_finite()) {
            return Err(err(format!(
                "non-finite sample ({}) at frame {}",
                samples[i],
                first_frame + i as u64
            )));
        }
        // Decoded audio is nominally within [-1, 1]; float formats can hold anything. Far
        // beyond full scale the power spectrum overflows f32 and HTSAT returns NaN, so such a
        // file is refused rather than silently rescaled (its level is part of what the model
        // compares).
        if let Some(i) = samples.iter().position(|s| s.abs() > MAX_SAMPLE_MAGNITUDE) {
            return Err(err(format!(
                "sample {} at frame {} is beyond +/-{MAX_SAMPLE_MAGNITUDE} (full scale is +/-1): \
                 rescale the file",
                samples[i],
                first_frame + i as u64
            )));
        }
        Ok(())
    }

    /// The checks that need the whole stream.
    fn finish(&self) -> Result<()> {
        let err = |msg: String| AdiffError::audio(&self.path, msg);
        if self.decoded_packets == 0 {
            return Err(if self.skipped_packets > 0 {
                err(format!(
                    "corrupt audio data: all {} packets failed to decode ({})",
                    self.skipped_packets, self.last_skip_reason
                ))
            } else {
                err("no audio samples (the stream is empty)".into())
            });
        }
        if self.emitted == 0 {
            return Err(err("no audio samples decoded".into()));
        }
        if let Some(declared) = self.params.n_frames {
            if is_lossless(self.params.codec)
                && self.frames < declared
                && !is_streaming_length(&self.params, declared)
            {
                return Err(err(format!(
                    "truncated: header declares {declared} sample frames but only {} are present",
                    self.frames
                )));
            }
        }
        self.sample_rate().map(|_| ())
    }
}

/// What a [`Stream`] reads from.
enum Source {
    Symphonia(Box<dyn FormatReader>, Box<dyn Decoder>),
    Pcm(Pcm16),
}

/// A 16-bit sample as symphonia's `IntoSample` converts it: `s / 32768` (exact).
fn pcm16_to_f32(s: i16) -> f32 {
    f32::from(s) / 32_768.0
}

/// Samples [`Stream::next_pcm`] hands out per call.
const PCM_CHUNK: usize = 32_768;

/// The data chunk of a 16-bit mono PCM WAV held in memory (what `adiff serve`'s clients
/// upload most): read straight from the bytes, it skips symphonia's copy of each packet, its
/// planar i16 buffer and the f32 buffer after it (decoding was 12% of the server's CPU under
/// load). Anything else, or anything unusual about it (a chunk running past the end, a data
/// chunk before `fmt `, an odd or empty data chunk), goes to symphonia, whose errors name it.
struct Pcm16 {
    bytes: std::sync::Arc<[u8]>,
    sample_rate: u32,
    /// The data chunk's bytes still to read: `pos..end`.
    pos: usize,
    end: usize,
}

impl Pcm16 {
    /// The chunks symphonia's WAV reader would read the same way: `fmt ` of exactly 16 bytes
    /// (WAVE_FORMAT_PCM, one channel, 16 bits), chunks it ignores (any id but `fmt `, `fact`,
    /// `LIST` and `data`, each within the RIFF chunk, padded to even lengths), then `data`.
    fn parse(bytes: std::sync::Arc<[u8]>) -> Option<Self> {
        let b = &bytes[..];
        let u16_at = |i: usize| Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?));
        let u32_at = |i: usize| Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));
        if b.get(0..4)? != b"RIFF" || b.get(8..12)? != b"WAVE" {
            return None;
        }
        let riff_end = (u32_at(4)? as usize).checked_add(8)?;
        if riff_end > b.len() {
            return None;
        }
        let mut pos = 12;
        let mut sample_rate = None;
        loop {
            let id = b.get(pos..pos + 4)?;
            let size = u32_at(pos + 4)? as usize;
            let body = pos + 8;
            let end = body.checked_add(size)?;
            if end > riff_end {
                return None;
            }
            match id {
                b"fmt " => {
                    let fmt = (u16_at(body)?, u16_at(body + 2)?, u16_at(body + 12)?);
                    let rate = u32_at(body + 4)?;
                    if size != 16 || fmt != (1, 1, 2) || u16_at(body + 14)? != 16 || rate == 0 {
                        return None;
                    }
                    sample_rate = Some(rate);
                }
                b"data" => {
                    if size == 0 || !size.is_multiple_of(2) {
                        return None;
                    }
                    return Some(Self {
                        sample_rate: sample_rate?,
                        pos: body,
                        end,
                        bytes,
                    });
                }
                b"fact" | b"LIST" => return None,
                _ => {}
            }
            // Chunks are padded to an even length.
            pos = end + (size & 1);
        }
    }
}

/// Codecs whose declared frame count is exact. Lossy containers only estimate it (an MP3 without a
/// Xing header guesses from the file size), so a shortfall there is not evidence of truncation.
fn is_lossless(codec: CodecType) -> bool {
    [
        CODEC_TYPE_FLAC,
        CODEC_TYPE_PCM_U8,
        CODEC_TYPE_PCM_S8,
        CODEC_TYPE_PCM_S16LE,
        CODEC_TYPE_PCM_S16BE,
        CODEC_TYPE_PCM_S24LE,
        CODEC_TYPE_PCM_S24BE,
        CODEC_TYPE_PCM_S32LE,
        CODEC_TYPE_PCM_S32BE,
        CODEC_TYPE_PCM_F32LE,
        CODEC_TYPE_PCM_F32BE,
        CODEC_TYPE_PCM_F64LE,
        CODEC_TYPE_PCM_F64BE,
    ]
    .contains(&codec)
}

/// A WAV written to a pipe (ffmpeg to stdout) declares a data length of `u32::MAX` bytes because
/// the real length is unknown; its frame count is then meaningless rather than a sign of truncation.
fn is_streaming_length(params: &symphonia::core::codecs::CodecParameters, declared: u64) -> bool {
    let bytes_per_frame = params
        .bits_per_coded_sample
        .zip(params.channels)
        .map(|(bits, ch)| (bits as u64).div_ceil(8) * ch.count() as u64);
    match bytes_per_frame {
        Some(b) if b > 0 => declared == u32::MAX as u64 / b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A 16-bit mono WAV: `fmt `, an odd-sized chunk symphonia ignores (`junk`) and its pad
    /// byte when `list`, then `data` declaring `declared` bytes.
    fn wav(samples: &[i16], sr: u32, list: bool, declared: Option<u32>) -> Vec<u8> {
        let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut body = b"WAVE".to_vec();
        body.extend(b"fmt ");
        body.extend(16u32.to_le_bytes());
        body.extend(1u16.to_le_bytes()); // PCM
        body.extend(1u16.to_le_bytes()); // mono
        body.extend(sr.to_le_bytes());
        body.extend((sr * 2).to_le_bytes());
        body.extend(2u16.to_le_bytes());
        body.extend(16u16.to_le_bytes());
        if list {
            body.extend(b"junk");
            body.extend(3u32.to_le_bytes());
            body.extend(b"abc\0");
        }
        body.extend(b"data");
        body.extend(declared.unwrap_or(data.len() as u32).to_le_bytes());
        body.extend(&data);
        let mut out = b"RIFF".to_vec();
        out.extend((body.len() as u32).to_le_bytes());
        out.extend(body);
        out
    }

    fn read_all(mut s: Stream) -> Result<(Vec<f32>, u32, Option<u64>)> {
        let mut out = Vec::new();
        while s.next_into(&mut out)? {}
        Ok((out, s.sample_rate()?, s.exact_frames()))
    }

    /// The in-memory PCM path gives symphonia's samples bit for bit, its rate and its exact
    /// length, and leaves everything unusual to symphonia (same errors as the file's).
    #[test]
    fn pcm16_bytes_match_symphonia() {
        let dir = tempfile::tempdir().unwrap();
        let samples: Vec<i16> = (0..100_000i32)
            .map(|i| ((i * 7919) % 65536 - 32768) as i16)
            .chain([i16::MIN, i16::MAX, 0, -1, 1])
            .collect();
        for list in [false, true] {
            let bytes = wav(&samples, 22050, list, None);
            assert!(Pcm16::parse(bytes.clone().into()).is_some(), "list {list}");
            let path = dir.path().join(format!("a{list}.wav"));
            std::fs::write(&path, &bytes).unwrap();
            let want = read_all(Stream::open(&path).unwrap()).unwrap();
            let got = read_all(Stream::open_bytes(&path, Arc::from(bytes)).unwrap()).unwrap();
            assert_eq!((got.1, got.2), (want.1, want.2));
            assert_eq!(got.0.len(), want.0.len());
            assert!(got
                .0
                .iter()
                .zip(&want.0)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        // A data chunk longer than its RIFF chunk: symphonia's error, as for the file.
        let short = wav(&samples[..1000], 16000, false, Some(4000));
        assert!(Pcm16::parse(short.clone().into()).is_none());
        let path = dir.path().join("short.wav");
        std::fs::write(&path, &short).unwrap();
        let want = Stream::open(&path)
            .and_then(read_all)
            .unwrap_err()
            .to_string();
        let got = Stream::open_bytes(&path, Arc::from(short))
            .and_then(read_all)
            .unwrap_err()
            .to_string();
        assert_eq!(got, want);
        // Stereo, or 8-bit: not this path.
        let mut stereo = wav(&samples[..1000], 16000, false, None);
        stereo[22] = 2;
        assert!(Pcm16::parse(stereo.into()).is_none());
    }
}
