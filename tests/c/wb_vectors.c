/* Test driver for wb_frame: reads commands on stdin, one per line, answers on stdout.
 *   E type flags seq payload_hex   -> encoded frame as hex (or "E 0" when it cannot be built)
 *   D hex                          -> "F type flags seq payload_hex" per delivered frame, then
 *                                     "S frames crc cobs length version overflows skipped"
 *   C                              -> canary sweep of wb_frame_encode over every payload and
 *                                     buffer length: "C ok" or "C fail ..."
 *   V                              -> "V <WB_SCHEMA_HASH>"
 *   H proto hash max_payload boot  -> HELLO payload hex
 *   R stream step ts class score v1 v2 ...  -> RESULT payload hex (floats as decimals)
 *   U hex                          -> RESULT unpacked: "U stream step ts class scorebits nbits..."
 *   S stream first channels count v1 ...    -> SENSOR payload hex
 *   A seq code / K uptime          -> ACK / HEARTBEAT payload hex
 * The decoder state persists across D lines (a stream split into chunks).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wb_frame.h"

#define LINE_MAX_LEN 65536

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static size_t unhex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0u;
    while (s[0] && s[1] && n < cap) {
        int hi = hexval(s[0]), lo = hexval(s[1]);
        if (hi < 0 || lo < 0) break;
        out[n++] = (uint8_t)((hi << 4) | lo);
        s += 2;
    }
    return n;
}

static void puthex(const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0u; i < n; i++) printf("%02x", p[i]);
}

static int canary_sweep(void)
{
    uint8_t payload[WB_MAX_PAYLOAD];
    uint8_t dst[WB_FRAME_WIRE_MAX(WB_MAX_PAYLOAD) + 16u];
    size_t plen, dlen, i;
    for (i = 0u; i < sizeof(payload); i++) payload[i] = (uint8_t)(i % 3u == 0u ? 0u : i);
    for (plen = 0u; plen <= WB_MAX_PAYLOAD; plen++) {
        size_t need = wb_frame_encode(1u, 0u, 7u, payload, plen, dst, sizeof(dst));
        if (need == 0u || need > WB_FRAME_WIRE_MAX(plen)) {
            printf("C fail need %zu for payload %zu\n", need, plen);
            return 1;
        }
        for (dlen = 0u; dlen <= need; dlen++) {
            size_t got;
            memset(dst, 0xA5, sizeof(dst));
            got = wb_frame_encode(1u, 0u, 7u, payload, plen, dst, dlen);
            for (i = dlen; i < sizeof(dst); i++) {
                if (dst[i] != 0xA5u) {
                    printf("C fail wrote byte %zu with dst_len %zu payload %zu\n", i, dlen, plen);
                    return 1;
                }
            }
            if ((dlen < need && got != 0u) || (dlen == need && got != need)) {
                printf("C fail returned %zu for dst_len %zu need %zu\n", got, dlen, need);
                return 1;
            }
        }
    }
    printf("C ok\n");
    return 0;
}

int main(void)
{
    static char line[LINE_MAX_LEN];
    static uint8_t buf[LINE_MAX_LEN / 2];
    static wb_decoder_t dec;
    wb_decoder_init(&dec);
    while (fgets(line, sizeof(line), stdin)) {
        if (line[0] == 'E') {
            unsigned type, flags, seq;
            char hex[2 * WB_MAX_PAYLOAD + 64] = "";
            uint8_t payload[WB_MAX_PAYLOAD + 32];
            uint8_t out[WB_FRAME_WIRE_MAX(WB_MAX_PAYLOAD + 32u)];
            size_t plen, n;
            if (sscanf(line + 1, "%u %u %u %520s", &type, &flags, &seq, hex) < 3) return 2;
            if (strcmp(hex, "-") == 0) hex[0] = '\0';
            plen = unhex(hex, payload, sizeof(payload));
            n = wb_frame_encode((uint8_t)type, (uint8_t)flags, (uint16_t)seq, payload, plen, out,
                                sizeof(out));
            printf("E ");
            if (n == 0u) printf("0");
            puthex(out, n);
            printf("\n");
        } else if (line[0] == 'D') {
            size_t n = unhex(line + 2, buf, sizeof(buf)), i;
            for (i = 0u; i < n; i++) {
                if (wb_decoder_feed(&dec, buf[i]) == WB_FRAME_READY) {
                    printf("F %u %u %u ", dec.frame.type, dec.frame.flags, dec.frame.seq);
                    puthex(dec.frame.payload, dec.frame.payload_len);
                    printf("\n");
                }
            }
            printf("S %lu %lu %lu %lu %lu %lu %lu\n", (unsigned long)dec.stats.frames,
                   (unsigned long)dec.stats.crc_errors, (unsigned long)dec.stats.cobs_errors,
                   (unsigned long)dec.stats.length_errors, (unsigned long)dec.stats.version_errors,
                   (unsigned long)dec.stats.overflows, (unsigned long)dec.stats.bytes_skipped);
        } else if (line[0] == 'C') {
            if (canary_sweep() != 0) return 1;
        } else if (line[0] == 'V') {
            printf("V %lu\n", (unsigned long)WB_SCHEMA_HASH);
        } else if (strchr("HRSAK", line[0]) != NULL) {
            uint8_t out[WB_MAX_PAYLOAD];
            size_t n = 0u;
            char *p = line + 1, *end;
            unsigned long v[8 + 2 * WB_MAX_VECTOR];
            float f[WB_MAX_VECTOR * 8];
            size_t k = 0u, nf = 0u;
            if (line[0] == 'R' || line[0] == 'S') {
                /* integers first (R: 4, S: 4), then floats */
                for (k = 0u; k < 4u; k++) v[k] = strtoul(p, &p, 10);
                while (nf < sizeof(f) / sizeof(f[0])) {
                    float x = strtof(p, &end);
                    if (end == p) break;
                    f[nf++] = x;
                    p = end;
                }
            } else {
                while (k < 8u) {
                    v[k] = strtoul(p, &end, 10);
                    if (end == p) break;
                    k++;
                    p = end;
                }
            }
            if (line[0] == 'H') {
                wb_hello_t h = {(uint8_t)v[0], (uint32_t)v[1], (uint16_t)v[2], (uint32_t)v[3]};
                n = wb_hello_pack(&h, out, sizeof(out));
            } else if (line[0] == 'R') {
                wb_result_t r;
                size_t i;
                r.stream_id = (uint8_t)v[0];
                r.step = (uint32_t)v[1];
                r.timestamp_ms = (uint32_t)v[2];
                r.class_id = (uint16_t)v[3];
                r.score = nf > 0u ? f[0] : 0.0f;
                r.vector_len = (uint8_t)(nf > 0u ? nf - 1u : 0u);
                for (i = 0u; i + 1u < nf && i < WB_MAX_VECTOR; i++) r.vector[i] = f[i + 1u];
                n = wb_result_pack(&r, out, sizeof(out));
            } else if (line[0] == 'S') {
                n = wb_sensor_pack((uint8_t)v[0], (uint32_t)v[1], (uint8_t)v[2], (uint8_t)v[3], f,
                                   out, sizeof(out));
            } else if (line[0] == 'A') {
                n = wb_ack_pack((uint16_t)v[0], (uint8_t)v[1], out, sizeof(out));
            } else {
                n = wb_heartbeat_pack((uint32_t)v[0], out, sizeof(out));
            }
            printf("%c ", line[0]);
            if (n == 0u) printf("0");
            puthex(out, n);
            printf("\n");
        } else if (line[0] == 'P') {
            size_t n = unhex(line + 2, buf, sizeof(buf)), i;
            wb_prediction_t r;
            uint32_t bits;
            if (!wb_prediction_unpack(buf, n, &r)) {
                printf("P bad\n");
            } else {
                memcpy(&bits, &r.score, 4u);
                printf("P %u %lu %lu %u %lu %08lx", r.stream_id, (unsigned long)r.step,
                       (unsigned long)r.timestamp_ms, r.kind, (unsigned long)r.index,
                       (unsigned long)bits);
                for (i = 0u; i < r.n_values; i++) {
                    memcpy(&bits, &r.values[i], 4u);
                    printf(" %08lx", (unsigned long)bits);
                }
                printf("\n");
            }
        } else if (line[0] == 'U') {
            size_t n = unhex(line + 2, buf, sizeof(buf)), i;
            wb_result_t r;
            uint32_t bits;
            if (!wb_result_unpack(buf, n, &r)) {
                printf("U bad\n");
            } else {
                memcpy(&bits, &r.score, 4u);
                printf("U %u %lu %lu %u %08lx", r.stream_id, (unsigned long)r.step,
                       (unsigned long)r.timestamp_ms, r.class_id, (unsigned long)bits);
                for (i = 0u; i < r.vector_len; i++) {
                    memcpy(&bits, &r.vector[i], 4u);
                    printf(" %08lx", (unsigned long)bits);
                }
                printf("\n");
            }
        }
        fflush(stdout);
    }
    return 0;
}
