// Reader for PaddlePaddle state dicts written by `paddle.save(layer.state_dict(), "x.pdparams")` — the format
// of PaddleClas's pretrained weights and of the `<prefix>.pdparams` half of its checkpoints
// (docs/file-formats.md, "Paddle .pdparams").
//
// The file is one pickle (protocol 2..4) of a dict {parameter name: numpy.ndarray}. Arrays are pickled by
// numpy as numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b') followed by BUILD with the state
// (version, shape, numpy.dtype(...), fortran_order, raw bytes). The restricted interpreter of src/io/pickle.h
// accepts only those globals (also numpy 2's numpy._core.multiarray, _codecs.encode for protocol 2's bytes,
// builtins.tuple for paddle's (name, array) pairs, builtins.bytes for an empty array), so a file cannot run code.
#pragma once
#include <featlearn/io/state_dict.h>

#include <string>

namespace featlearn {

// Requires: `path` holds a pickled dict whose values are numpy arrays of float32, float64, float16, int64,
// int32, int16, int8, uint8 or bool (C or Fortran order, little-endian), or (name, array) pairs.
// Ensures: the (name, tensor) pairs in file order, each a fresh contiguous CPU tensor of the saved dtype and
// shape, without paddle's "StructuredToParameterName@@" entry (the structured-name -> variable-name table,
// not a tensor).
// Throws featlearn::Error naming the file for a missing, corrupt, truncated or foreign file, a pickle outside
// the supported subset, a non-dict pickle and a non-array value (named) — never aborts.
NamedTensors load_pdparams(const std::string& path);

// True when `path` names a Paddle file: its name ends with .pdparams, or it is a pickle that is not a
// torch.save legacy file (which starts with torch's magic number). False for a zip archive (torch.save) and
// for a file that cannot be opened.
bool is_pdparams_file(const std::string& path);

}  // namespace featlearn
