/* wb_frame: see wb_frame.h. C99, no malloc, no VLAs, no globals (the CRC table is const). */
#include "wb_frame.h"

#include <string.h>

uint32_t wb_crc32(uint32_t crc, const uint8_t *data_ptr, size_t data_len)
{
    /* bitwise, table-free: 8 shifts per byte; small code beats speed on an MCU here */
    size_t i;
    unsigned k;
    crc = ~crc;
    for (i = 0u; i < data_len; i++) {
        crc ^= data_ptr[i];
        for (k = 0u; k < 8u; k++) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

size_t wb_cobs_encode(const uint8_t *src_ptr, size_t src_len, uint8_t *dst_ptr, size_t dst_len)
{
    size_t code_pos = 0u, out = 1u, i;
    uint8_t code = 1u;
    if (dst_len < 1u) {
        return 0u;
    }
    for (i = 0u; i < src_len; i++) {
        if (src_ptr[i] == 0u) {
            dst_ptr[code_pos] = code;
            code_pos = out++;
            code = 1u;
            if (code_pos >= dst_len) {
                return 0u;
            }
        } else {
            if (out >= dst_len) {
                return 0u;
            }
            dst_ptr[out++] = src_ptr[i];
            code++;
            if (code == 0xFFu) {
                dst_ptr[code_pos] = code;
                code_pos = out++;
                code = 1u;
                if (code_pos >= dst_len) {
                    return 0u;
                }
            }
        }
    }
    dst_ptr[code_pos] = code;
    return out;
}

size_t wb_cobs_decode(const uint8_t *src_ptr, size_t src_len, uint8_t *dst_ptr, size_t dst_len)
{
    size_t i = 0u, out = 0u, j;
    while (i < src_len) {
        uint8_t code = src_ptr[i];
        size_t end = i + (size_t)code;
        if (code == 0u || end > src_len) {
            return (size_t)-1;
        }
        for (j = i + 1u; j < end; j++) {
            if (src_ptr[j] == 0u || out >= dst_len) {
                return (size_t)-1;
            }
            dst_ptr[out++] = src_ptr[j];
        }
        i = end;
        if (code < 0xFFu && i < src_len) {
            if (out >= dst_len) {
                return (size_t)-1;
            }
            dst_ptr[out++] = 0u;
        }
    }
    return out;
}

size_t wb_frame_encode(uint8_t type, uint8_t flags, uint16_t seq, const uint8_t *payload_ptr,
                       size_t payload_len, uint8_t *dst_ptr, size_t dst_len)
{
    uint8_t raw[WB_MAX_RAW];
    size_t n, i, enc;
    uint32_t crc;
    if (payload_len > WB_MAX_PAYLOAD || (payload_len > 0u && payload_ptr == NULL)) {
        return 0u;
    }
    raw[0] = (uint8_t)WB_PROTOCOL_VERSION;
    raw[1] = type;
    raw[2] = flags;
    raw[3] = (uint8_t)(seq & 0xFFu);
    raw[4] = (uint8_t)(seq >> 8);
    raw[5] = (uint8_t)(payload_len & 0xFFu);
    raw[6] = (uint8_t)(payload_len >> 8);
    for (i = 0u; i < payload_len; i++) {
        raw[WB_HEADER_SIZE + i] = payload_ptr[i];
    }
    n = WB_HEADER_SIZE + payload_len;
    crc = wb_crc32(0u, raw, n);
    for (i = 0u; i < 4u; i++) {
        raw[n + i] = (uint8_t)(crc >> (8u * i));
    }
    n += WB_CRC_SIZE;
    if (dst_len < 2u) {
        return 0u;
    }
    enc = wb_cobs_encode(raw, n, dst_ptr, dst_len - 1u); /* room for the delimiter */
    if (enc == 0u) {
        return 0u;
    }
    dst_ptr[enc] = 0u;
    return enc + 1u;
}

void wb_decoder_init(wb_decoder_t *dec)
{
    size_t i;
    uint8_t *p = (uint8_t *)dec;
    for (i = 0u; i < sizeof(*dec); i++) {
        p[i] = 0u;
    }
}

static uint8_t wb_finish(wb_decoder_t *dec)
{
    size_t n = wb_cobs_decode(dec->encoded, dec->fill, dec->raw, sizeof(dec->raw));
    uint32_t crc, got;
    uint16_t len;
    if (n == (size_t)-1) {
        dec->stats.cobs_errors++;
        return WB_ERR_COBS;
    }
    if (n < WB_HEADER_SIZE + WB_CRC_SIZE) {
        dec->stats.length_errors++;
        return WB_ERR_LENGTH;
    }
    crc = wb_crc32(0u, dec->raw, n - WB_CRC_SIZE);
    got = (uint32_t)dec->raw[n - 4u] | ((uint32_t)dec->raw[n - 3u] << 8) |
          ((uint32_t)dec->raw[n - 2u] << 16) | ((uint32_t)dec->raw[n - 1u] << 24);
    if (crc != got) {
        dec->stats.crc_errors++;
        return WB_ERR_CRC;
    }
    if (dec->raw[0] != WB_PROTOCOL_VERSION) {
        dec->stats.version_errors++;
        return WB_ERR_VERSION;
    }
    len = (uint16_t)(dec->raw[5] | (dec->raw[6] << 8));
    if ((size_t)len != n - WB_HEADER_SIZE - WB_CRC_SIZE || len > WB_MAX_PAYLOAD) {
        dec->stats.length_errors++;
        return WB_ERR_LENGTH;
    }
    dec->frame.version = dec->raw[0];
    dec->frame.type = dec->raw[1];
    dec->frame.flags = dec->raw[2];
    dec->frame.seq = (uint16_t)(dec->raw[3] | (dec->raw[4] << 8));
    dec->frame.payload_len = len;
    dec->frame.payload = &dec->raw[WB_HEADER_SIZE];
    dec->stats.frames++;
    return WB_FRAME_READY;
}

uint8_t wb_decoder_feed(wb_decoder_t *dec, uint8_t byte)
{
    uint8_t status = 0u;
    if (byte != 0u) {
        if (dec->fill < sizeof(dec->encoded)) {
            dec->encoded[dec->fill++] = byte;
        } else {
            if (!dec->overflow) {
                dec->stats.overflows++;
                dec->overflow = 1u;
                status = WB_ERR_OVERFLOW;
            }
            dec->stats.bytes_skipped++;
        }
        return status;
    }
    if (dec->overflow) {
        dec->stats.bytes_skipped += (uint32_t)dec->fill + 1u;
    } else if (dec->fill > 0u) {
        status = wb_finish(dec);
        if (status != WB_FRAME_READY) {
            dec->stats.bytes_skipped += (uint32_t)dec->fill + 1u;
        }
    }
    dec->fill = 0u;
    dec->overflow = 0u;
    return status;
}

const char *wb_status_name(uint8_t flag)
{
    switch (flag) {
    case WB_FRAME_READY: return "frame";
    case WB_ERR_OVERFLOW: return "overflow";
    case WB_ERR_COBS: return "cobs";
    case WB_ERR_CRC: return "crc";
    case WB_ERR_LENGTH: return "length";
    case WB_ERR_VERSION: return "version";
    default: return "none";
    }
}

/* ---- messages ---------------------------------------------------------------------------- */

static void wb_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

static void wb_put32(uint8_t *p, uint32_t v)
{
    unsigned i;
    for (i = 0u; i < 4u; i++) {
        p[i] = (uint8_t)(v >> (8u * i));
    }
}

static uint16_t wb_get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t wb_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static void wb_putf(uint8_t *p, float f)
{
    uint32_t v;
    memcpy(&v, &f, sizeof(v));
    wb_put32(p, v);
}

static float wb_getf(const uint8_t *p)
{
    uint32_t v = wb_get32(p);
    float f;
    memcpy(&f, &v, sizeof(f));
    return f;
}

size_t wb_hello_pack(const wb_hello_t *msg, uint8_t *dst_ptr, size_t dst_len)
{
    if (dst_len < 11u) {
        return 0u;
    }
    dst_ptr[0] = msg->protocol_version;
    wb_put32(dst_ptr + 1, msg->schema_hash);
    wb_put16(dst_ptr + 5, msg->max_payload);
    wb_put32(dst_ptr + 7, msg->boot_id);
    return 11u;
}

int wb_hello_unpack(const uint8_t *src_ptr, size_t src_len, wb_hello_t *msg)
{
    if (src_len != 11u) {
        return 0;
    }
    msg->protocol_version = src_ptr[0];
    msg->schema_hash = wb_get32(src_ptr + 1);
    msg->max_payload = wb_get16(src_ptr + 5);
    msg->boot_id = wb_get32(src_ptr + 7);
    return 1;
}

size_t wb_result_pack(const wb_result_t *msg, uint8_t *dst_ptr, size_t dst_len)
{
    size_t n = 16u + 4u * (size_t)msg->vector_len, i;
    if (msg->vector_len > WB_MAX_VECTOR || dst_len < n) {
        return 0u;
    }
    dst_ptr[0] = msg->stream_id;
    wb_put32(dst_ptr + 1, msg->step);
    wb_put32(dst_ptr + 5, msg->timestamp_ms);
    wb_put16(dst_ptr + 9, msg->class_id);
    wb_putf(dst_ptr + 11, msg->score);
    dst_ptr[15] = msg->vector_len;
    for (i = 0u; i < msg->vector_len; i++) {
        wb_putf(dst_ptr + 16 + 4u * i, msg->vector[i]);
    }
    return n;
}

int wb_result_unpack(const uint8_t *src_ptr, size_t src_len, wb_result_t *msg)
{
    size_t i;
    if (src_len < 16u || src_ptr[15] > WB_MAX_VECTOR || src_len != 16u + 4u * src_ptr[15]) {
        return 0;
    }
    msg->stream_id = src_ptr[0];
    msg->step = wb_get32(src_ptr + 1);
    msg->timestamp_ms = wb_get32(src_ptr + 5);
    msg->class_id = wb_get16(src_ptr + 9);
    msg->score = wb_getf(src_ptr + 11);
    msg->vector_len = src_ptr[15];
    for (i = 0u; i < msg->vector_len; i++) {
        msg->vector[i] = wb_getf(src_ptr + 16 + 4u * i);
    }
    return 1;
}

size_t wb_prediction_pack(const wb_prediction_t *msg, uint8_t *dst_ptr, size_t dst_len)
{
    size_t n = 19u + 4u * (size_t)msg->n_values, i;
    if (msg->n_values > WB_MAX_VECTOR || dst_len < n) {
        return 0u;
    }
    dst_ptr[0] = msg->stream_id;
    wb_put32(dst_ptr + 1, msg->step);
    wb_put32(dst_ptr + 5, msg->timestamp_ms);
    dst_ptr[9] = msg->kind;
    wb_put32(dst_ptr + 10, msg->index);
    wb_putf(dst_ptr + 14, msg->score);
    dst_ptr[18] = msg->n_values;
    for (i = 0u; i < msg->n_values; i++) {
        wb_putf(dst_ptr + 19 + 4u * i, msg->values[i]);
    }
    return n;
}

int wb_prediction_unpack(const uint8_t *src_ptr, size_t src_len, wb_prediction_t *msg)
{
    size_t i;
    if (src_len < 19u || src_ptr[18] > WB_MAX_VECTOR || src_len != 19u + 4u * src_ptr[18]) {
        return 0;
    }
    msg->stream_id = src_ptr[0];
    msg->step = wb_get32(src_ptr + 1);
    msg->timestamp_ms = wb_get32(src_ptr + 5);
    msg->kind = src_ptr[9];
    msg->index = wb_get32(src_ptr + 10);
    msg->score = wb_getf(src_ptr + 14);
    msg->n_values = src_ptr[18];
    for (i = 0u; i < msg->n_values; i++) {
        msg->values[i] = wb_getf(src_ptr + 19 + 4u * i);
    }
    return 1;
}

size_t wb_sensor_pack(uint8_t stream_id, uint32_t first_step, uint8_t channels, uint8_t count,
                      const float *values_ptr, uint8_t *dst_ptr, size_t dst_len)
{
    size_t n = 7u + 4u * (size_t)channels * count, i;
    if (channels == 0u || dst_len < n || n > WB_MAX_PAYLOAD) {
        return 0u;
    }
    dst_ptr[0] = stream_id;
    wb_put32(dst_ptr + 1, first_step);
    dst_ptr[5] = channels;
    dst_ptr[6] = count;
    for (i = 0u; i < (size_t)channels * count; i++) {
        wb_putf(dst_ptr + 7 + 4u * i, values_ptr[i]);
    }
    return n;
}

size_t wb_ack_pack(uint16_t seq, uint8_t code, uint8_t *dst_ptr, size_t dst_len)
{
    if (dst_len < 3u) {
        return 0u;
    }
    wb_put16(dst_ptr, seq);
    dst_ptr[2] = code;
    return 3u;
}

int wb_ack_unpack(const uint8_t *src_ptr, size_t src_len, uint16_t *seq, uint8_t *code)
{
    if (src_len != 3u) {
        return 0;
    }
    *seq = wb_get16(src_ptr);
    *code = src_ptr[2];
    return 1;
}

size_t wb_heartbeat_pack(uint32_t uptime_ms, uint8_t *dst_ptr, size_t dst_len)
{
    if (dst_len < 4u) {
        return 0u;
    }
    wb_put32(dst_ptr, uptime_ms);
    return 4u;
}
