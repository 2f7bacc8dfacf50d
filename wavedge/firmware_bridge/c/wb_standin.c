/* wb_standin: a stand-in microcontroller for tests and demos, built on wb_frame.
 *
 *   wb_standin PATH|-f FD [BOOT_ID]
 *
 * Talks the bridge protocol on a serial device (or an inherited file descriptor, e.g. the
 * master side of a pseudo-terminal): answers HELLO with its own HELLO (schema hash, max
 * payload, boot id), acknowledges every COMMAND, and prints one line per RESULT it decodes:
 *   RESULT seq=<seq> stream=<s> step=<n> class=<c> score=<f> vector=<n floats>
 *   PREDICTION seq=<seq> stream=<s> step=<n> kind=<k> index=<i> score=<f> values=<n> ...
 * On hang-up or end of input it prints its decoder statistics and exits 0.
 */
#define _DEFAULT_SOURCE /* cfmakeraw */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "wb_frame.h"

static int send_frame(int fd, uint8_t type, uint16_t seq, const uint8_t *payload, size_t len)
{
    uint8_t wire[WB_FRAME_WIRE_MAX(WB_MAX_PAYLOAD)];
    size_t n = wb_frame_encode(type, 0u, seq, payload, len, wire, sizeof(wire)), off = 0u;
    while (off < n) {
        ssize_t w = write(fd, wire + off, n - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        off += (size_t)w;
    }
    return 0;
}

static void handle(int fd, const wb_frame_t *f, uint32_t boot_id, uint16_t *seq)
{
    uint8_t out[WB_MAX_PAYLOAD];
    size_t n;
    if (f->type == WB_HELLO) {
        wb_hello_t mine = {(uint8_t)WB_PROTOCOL_VERSION, WB_SCHEMA_HASH,
                           (uint16_t)WB_MAX_PAYLOAD, boot_id};
        n = wb_hello_pack(&mine, out, sizeof(out));
        (void)send_frame(fd, WB_HELLO, (*seq)++, out, n);
        printf("HELLO from host seq=%u\n", f->seq);
    } else if (f->type == WB_COMMAND) {
        n = wb_ack_pack(f->seq, 0u, out, sizeof(out));
        (void)send_frame(fd, WB_ACK, (*seq)++, out, n);
        printf("COMMAND seq=%u acknowledged\n", f->seq);
    } else if (f->type == WB_RESULT) {
        wb_result_t r;
        if (wb_result_unpack(f->payload, f->payload_len, &r)) {
            printf("RESULT seq=%u stream=%u step=%lu class=%u score=%.4f vector=%u\n", f->seq,
                   r.stream_id, (unsigned long)r.step, r.class_id, (double)r.score,
                   r.vector_len);
        } else {
            printf("RESULT seq=%u malformed payload of %u bytes\n", f->seq, f->payload_len);
        }
    } else if (f->type == WB_PREDICTION) {
        wb_prediction_t p;
        if (wb_prediction_unpack(f->payload, f->payload_len, &p)) {
            /* the last value: a class-with-variance frame's last class's variance */
            printf("PREDICTION seq=%u stream=%u step=%lu kind=%u index=%lu score=%.4f "
                   "values=%u first=%.6g last=%.6g\n", f->seq, p.stream_id,
                   (unsigned long)p.step, p.kind, (unsigned long)p.index, (double)p.score,
                   p.n_values, p.n_values ? (double)p.values[0] : 0.0,
                   p.n_values ? (double)p.values[p.n_values - 1] : 0.0);
        } else {
            printf("PREDICTION seq=%u malformed payload of %u bytes\n", f->seq,
                   f->payload_len);
        }
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    static wb_decoder_t dec;
    uint8_t buf[256];
    uint16_t seq = 0u;
    uint32_t boot_id;
    int fd;
    if (argc >= 3 && strcmp(argv[1], "-f") == 0) {
        fd = atoi(argv[2]);
        boot_id = argc >= 4 ? (uint32_t)strtoul(argv[3], NULL, 0) : 1u;
    } else if (argc >= 2) {
        struct termios tio;
        fd = open(argv[1], O_RDWR | O_NOCTTY);
        if (fd < 0) {
            fprintf(stderr, "wb_standin: cannot open %s: %s\n", argv[1], strerror(errno));
            return 1;
        }
        if (tcgetattr(fd, &tio) == 0) {
            cfmakeraw(&tio);
            (void)tcsetattr(fd, TCSANOW, &tio);
        }
        boot_id = argc >= 3 ? (uint32_t)strtoul(argv[2], NULL, 0) : 1u;
    } else {
        fprintf(stderr, "usage: wb_standin PATH|-f FD [BOOT_ID]\n");
        return 2;
    }
    printf("READY boot_id=%lu\n", (unsigned long)boot_id);
    fflush(stdout);
    wb_decoder_init(&dec);
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf)), i;
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break; /* hang-up (EIO on a pty) or end of input */
        for (i = 0; i < n; i++) {
            if (wb_decoder_feed(&dec, buf[i]) == WB_FRAME_READY) {
                handle(fd, &dec.frame, boot_id, &seq);
            }
        }
    }
    printf("STATS frames=%lu crc=%lu cobs=%lu length=%lu version=%lu overflows=%lu skipped=%lu\n",
           (unsigned long)dec.stats.frames, (unsigned long)dec.stats.crc_errors,
           (unsigned long)dec.stats.cobs_errors, (unsigned long)dec.stats.length_errors,
           (unsigned long)dec.stats.version_errors, (unsigned long)dec.stats.overflows,
           (unsigned long)dec.stats.bytes_skipped);
    return 0;
}
