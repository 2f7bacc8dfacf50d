/* libFuzzer target: any byte sequence into the wb_frame decoder and COBS decoder must not
 * crash, hang, or touch memory out of bounds (built with ASan/UBSan by `make fuzz`); every
 * frame it delivers must re-encode to a frame that decodes to itself. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wb_frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static wb_decoder_t dec;
    static uint8_t out[WB_MAX_RAW];
    static uint8_t wire[WB_FRAME_WIRE_MAX(WB_MAX_PAYLOAD)];
    size_t i;
    wb_decoder_init(&dec);
    (void)wb_cobs_decode(data, size, out, sizeof(out));
    for (i = 0u; i < size; i++) {
        if (wb_decoder_feed(&dec, data[i]) == WB_FRAME_READY) {
            wb_frame_t f = dec.frame;
            uint8_t payload[WB_MAX_PAYLOAD];
            size_t n, k;
            wb_decoder_t again;
            memcpy(payload, f.payload, f.payload_len);
            n = wb_frame_encode(f.type, f.flags, f.seq, payload, f.payload_len, wire,
                                sizeof(wire));
            if (n == 0u) abort();
            wb_decoder_init(&again);
            for (k = 0u; k + 1u < n; k++) {
                if (wb_decoder_feed(&again, wire[k]) != 0u) abort();
            }
            if (wb_decoder_feed(&again, wire[n - 1u]) != WB_FRAME_READY) abort();
            if (again.frame.payload_len != f.payload_len ||
                memcmp(again.frame.payload, payload, f.payload_len) != 0) abort();
        }
    }
    return 0;
}
