// quant.h5, schema kvq.quant/2 (schemas/quant-2.md): what kvq fit writes and kvq eval, kvq
// inspect and the runtime read. Written to a temporary file and renamed; the reader checks the
// schema and version, the method string, the fingerprints, and every per-layer attribute and
// dataset (dtype, shape, finiteness, ascending levels, permutations, ranges), reporting each
// problem as "<file>:<path>: expected ..., found ...".
#pragma once

#include <cstdint>
#include <string>

#include "kvq/artifact/h5.h"
#include "kvq/artifact/validate.h"
#include "kvq/methods/quantizer.h"

namespace kvq::methods {

inline constexpr const char* kQuantSchema = "kvq.quant";
inline constexpr int64_t kQuantVersion = 2;  // 2: nuq values per token unless -vhead; Q-Norm opt-in

// The `granularity` attribute of a layer's key or value group, e.g. "channel", "token",
// "token/group64", "channel/time-group128", "tensor", "token/perm-group128".
std::string granularity(const MethodSpec& spec, bool key);

// created: UTC ISO 8601. Layer-independent quantizers write no /layers group.
void write_quant(const std::string& path, const Quantizer& q, const std::string& created);

// Reads and validates; throws kvq::Error with the first problem ("(and N more)"). The
// quantizer's provenance holds the path, creation time, tool version and fingerprints; use
// Quantizer::require_model before quantizing a model's K/V with it.
Quantizer read_quant(const std::string& path);
// Validates an open file, adding every problem found; returns the quantizer when none was found
// (a default Quantizer otherwise). Throws only for a wrong or newer schema. Call it inside
// artifact::read_isolated (with the File::open) when the file may be hostile.
Quantizer check_quant(const artifact::File& file, artifact::Problems& problems);

}  // namespace kvq::methods
