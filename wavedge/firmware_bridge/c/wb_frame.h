/* wb_frame: the wavedge bridge frame codec for microcontrollers (C99).
 *
 * A frame on the wire is COBS(header | payload | crc32) followed by 0x00.
 *   header, little-endian, 7 bytes: version u8, type u8, flags u8, seq u16, payload length u16
 *   crc32: as zlib (check value 0xCBF43926 for "123456789") over header and payload, LE
 *
 * No malloc, no variable-length arrays, no globals: every buffer is the caller's, with an
 * explicit length. The decoder takes one byte at a time and never delivers a frame that fails
 * a check; it drops it, counts it, and resynchronises at the next 0x00.
 * The Python module wavedge.firmware_bridge.framing is the reference; the tests run both on
 * shared vectors. Spec and golden vectors: docs/bridge.md.
 */
#ifndef WB_FRAME_H
#define WB_FRAME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WB_PROTOCOL_VERSION 1u
#define WB_HEADER_SIZE 7u
#define WB_CRC_SIZE 4u
#ifndef WB_MAX_PAYLOAD
#define WB_MAX_PAYLOAD 240u /* keeps a raw frame within one COBS block */
#endif
#define WB_MAX_RAW (WB_HEADER_SIZE + WB_MAX_PAYLOAD + WB_CRC_SIZE)
/* COBS worst case for n bytes: one code byte per 254 data bytes, plus one */
#define WB_COBS_ENCODED_MAX(n) ((n) + (n) / 254u + 1u)
#define WB_MAX_ENCODED WB_COBS_ENCODED_MAX(WB_MAX_RAW)
/* bytes of one frame on the wire, delimiter included, for a payload of n bytes */
#define WB_FRAME_WIRE_MAX(n) (WB_COBS_ENCODED_MAX(WB_HEADER_SIZE + (n) + WB_CRC_SIZE) + 1u)

/* decoder status flags (a bit set per event in the byte just fed) */
#define WB_FRAME_READY 0x01u   /* a valid frame is in the decoder's frame */
#define WB_ERR_OVERFLOW 0x02u  /* more bytes than a frame can have before a delimiter */
#define WB_ERR_COBS 0x04u      /* malformed COBS */
#define WB_ERR_CRC 0x08u       /* CRC mismatch */
#define WB_ERR_LENGTH 0x10u    /* too short, or the header's length disagrees */
#define WB_ERR_VERSION 0x20u   /* unknown protocol version */

typedef struct {
    uint8_t version;
    uint8_t type;
    uint8_t flags;
    uint16_t seq;
    uint16_t payload_len;
    const uint8_t *payload; /* points into the decoder; valid until the next byte is fed */
} wb_frame_t;

typedef struct {
    uint32_t frames;
    uint32_t crc_errors;
    uint32_t cobs_errors;
    uint32_t length_errors;
    uint32_t version_errors;
    uint32_t overflows;
    uint32_t bytes_skipped;
} wb_stats_t;

typedef struct {
    uint8_t encoded[WB_MAX_ENCODED]; /* bytes since the last delimiter */
    uint8_t raw[WB_MAX_RAW];         /* the decoded frame */
    size_t fill;
    uint8_t overflow;
    wb_frame_t frame;
    wb_stats_t stats;
} wb_decoder_t;

/* CRC-32 (zlib). crc: 0 to start, or the previous result to continue. */
uint32_t wb_crc32(uint32_t crc, const uint8_t *data_ptr, size_t data_len);

/* COBS-encode src into dst (no delimiter). Returns the encoded length, or 0 when dst_len is
 * too small (nothing is written past dst_len). */
size_t wb_cobs_encode(const uint8_t *src_ptr, size_t src_len, uint8_t *dst_ptr, size_t dst_len);

/* COBS-decode src (no delimiter) into dst. Returns the decoded length, or (size_t)-1 when src
 * is malformed or dst_len is too small. */
size_t wb_cobs_decode(const uint8_t *src_ptr, size_t src_len, uint8_t *dst_ptr, size_t dst_len);

/* Build a whole frame, delimiter included, into dst. Returns its length, or 0 when the
 * payload is longer than WB_MAX_PAYLOAD or dst_len is too small (WB_FRAME_WIRE_MAX). */
size_t wb_frame_encode(uint8_t type, uint8_t flags, uint16_t seq, const uint8_t *payload_ptr,
                       size_t payload_len, uint8_t *dst_ptr, size_t dst_len);

/* Reset a decoder (statistics included). */
void wb_decoder_init(wb_decoder_t *dec);

/* Feed one received byte. Returns WB_FRAME_READY (dec->frame holds the frame) or error
 * flags for a frame that was dropped, or 0 when nothing completed. */
uint8_t wb_decoder_feed(wb_decoder_t *dec, uint8_t byte);

/* ---- messages: the payload layouts (little-endian; floats IEEE-754, the MCU little-endian) */
#define WB_SCHEMA_HASH 0xF0775CDEu /* CRC-32 of wavedge.firmware_bridge.messages.SCHEMA */
#define WB_MAX_VECTOR 32u

enum { WB_HELLO = 1, WB_RESULT = 2, WB_SENSOR = 3, WB_COMMAND = 4, WB_ACK = 5, WB_NACK = 6,
       WB_HEARTBEAT = 7, WB_PREDICTION = 8 };

typedef struct {
    uint8_t protocol_version;
    uint32_t schema_hash;
    uint16_t max_payload;
    uint32_t boot_id;
} wb_hello_t;

typedef struct {
    uint8_t stream_id;
    uint32_t step;
    uint32_t timestamp_ms;
    uint16_t class_id;
    float score;
    uint8_t vector_len;
    float vector[WB_MAX_VECTOR];
} wb_result_t;

/* PREDICTION: any output head; kind 1 class scores, 2 Gaussian (means then variances),
 * 3 regression, 4 tokens (index = top id, values = top-5 probabilities), 5 embedding,
 * 6 activations, 7 class scores with their variance (values = logits then variances) */
typedef struct {
    uint8_t stream_id;
    uint32_t step;
    uint32_t timestamp_ms;
    uint8_t kind;
    uint32_t index;
    float score;
    uint8_t n_values;
    float values[WB_MAX_VECTOR];
} wb_prediction_t;

/* Each pack writes the payload into dst and returns its length, or 0 when it does not fit
 * dst_len; each unpack returns 1 when the payload has exactly the layout, else 0. */
size_t wb_hello_pack(const wb_hello_t *msg, uint8_t *dst_ptr, size_t dst_len);
int wb_hello_unpack(const uint8_t *src_ptr, size_t src_len, wb_hello_t *msg);
size_t wb_result_pack(const wb_result_t *msg, uint8_t *dst_ptr, size_t dst_len);
int wb_result_unpack(const uint8_t *src_ptr, size_t src_len, wb_result_t *msg);
size_t wb_prediction_pack(const wb_prediction_t *msg, uint8_t *dst_ptr, size_t dst_len);
int wb_prediction_unpack(const uint8_t *src_ptr, size_t src_len, wb_prediction_t *msg);
/* SENSOR: count samples of channels floats each (sample-major). */
size_t wb_sensor_pack(uint8_t stream_id, uint32_t first_step, uint8_t channels, uint8_t count,
                      const float *values_ptr, uint8_t *dst_ptr, size_t dst_len);
/* ACK / NACK: the seq of the command answered and a code (0 = ok). */
size_t wb_ack_pack(uint16_t seq, uint8_t code, uint8_t *dst_ptr, size_t dst_len);
int wb_ack_unpack(const uint8_t *src_ptr, size_t src_len, uint16_t *seq, uint8_t *code);
size_t wb_heartbeat_pack(uint32_t uptime_ms, uint8_t *dst_ptr, size_t dst_len);

/* A short name for one status flag (for logs). */
const char *wb_status_name(uint8_t flag);

#ifdef __cplusplus
}
#endif
#endif /* WB_FRAME_H */
