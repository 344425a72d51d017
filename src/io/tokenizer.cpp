#include "io/tokenizer.h"

namespace spense {

std::vector<int32_t> Tokenizer::encode_for_model(std::string_view text) const {
    std::vector<int32_t> ids = encode(text);
    if (add_bos()) ids.insert(ids.begin(), *bos_id());
    return ids;
}

}  // namespace spense
